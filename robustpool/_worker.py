"""The worker loop: handshake, publish progress, run, reply. No pool logic lives here.

A worker is forked by the supervisor and talks only to the owner, over its own data socket
(see ``_wire`` for the frames). It never decides anything: it runs what it is sent, in
order, and reports. Before each phase of a task it stores the phase in its progress slot,
so that if it dies the owner knows exactly what it was doing.

Replies are batched: results of tasks that were already waiting in the worker's buffer are
sent together, which turns a syscall per task into one per batch for tiny tasks, while a
slow task's result is still sent as soon as it is ready.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from . import _serialize as ser
from ._errors import TaskSerializationError
from ._wire import (
    FUNC_HEAD,
    PID,
    RESULT_HEAD,
    SLOT_DEADLINE,
    SLOT_ITEM,
    SLOT_PHASE,
    SLOT_STARTED,
    SLOT_TASK,
    TASK_HEAD,
    FrameReader,
    Kind,
    Mode,
    Phase,
    Status,
    frame,
    frame_head,
    map_slot,
)

_FLUSH_COUNT = 32
_FLUSH_NS = 1_000_000  # a result waits at most ~1 ms for company before it is sent
_FUNC_CACHE = 128  # must equal the owner's mirror of this cache (see _dispatcher)

_PHASE_LOAD = "unpickling the task in the worker"
_PHASE_DUMP = "pickling the result in the worker"


class _Worker:
    def __init__(self, sock: socket.socket, view: memoryview) -> None:
        self.sock = sock
        self.view = view
        self.funcs: dict[int, bytes | Callable[..., Any]] = {}
        self.out: list[bytes] = []
        self.first_pending = 0

    def flush(self) -> None:
        out = self.out
        if not out:
            return
        if len(out) == 1:
            self.sock.sendall(out[0])
        else:
            # Gathered in one sendmsg: a large result is never concatenated (copied).
            views = [memoryview(b) for b in out]
            while views:
                sent = self.sock.sendmsg(views[:64])
                while sent:
                    if sent >= len(views[0]):
                        sent -= len(views.pop(0))
                    else:
                        views[0] = views[0][sent:]
                        sent = 0
        out.clear()

    def reply(self, *parts: bytes) -> None:
        now = time.monotonic_ns()
        if not self.out:
            self.first_pending = now
        self.out.extend(parts)
        if len(self.out) >= 2 * _FLUSH_COUNT or now - self.first_pending >= _FLUSH_NS:
            self.flush()

    def remember_function(self, payload: bytes | bytearray) -> None:
        (func_id,) = FUNC_HEAD.unpack_from(payload)
        # Unpickled lazily, inside a task's LOADING phase, so a crash while unpickling a
        # function is blamed on the task that needed it.
        self.funcs[func_id] = bytes(payload[FUNC_HEAD.size :])
        while len(self.funcs) > _FUNC_CACHE:
            del self.funcs[next(iter(self.funcs))]

    def function(self, func_id: int) -> Callable[..., Any]:
        fn = self.funcs[func_id]
        if isinstance(fn, bytes):
            fn = ser.loads(fn)
            if not callable(fn):
                raise TypeError(f"the task's function unpickled to a non-callable {type(fn).__name__}")
            self.funcs[func_id] = fn
        return fn

    def run_task(self, payload: bytes | bytearray) -> None:
        task_id, func_id, mode, timeout = TASK_HEAD.unpack_from(payload)
        view = self.view
        start = time.monotonic_ns()
        view[SLOT_DEADLINE] = start + int(timeout * 1e9) if timeout > 0 else 0
        view[SLOT_STARTED] = start
        view[SLOT_ITEM] = 0
        view[SLOT_TASK] = task_id
        view[SLOT_PHASE] = Phase.LOADING  # stored last: readers trust the fields above
        try:
            fn = self.function(func_id)
            items = ser.loads(memoryview(payload)[TASK_HEAD.size :])
        except BaseException as exc:
            err = TaskSerializationError(_PHASE_LOAD, f"{type(exc).__name__}: {ser._safe_str(exc)}")
            err.__cause__ = exc
            body = ser.encode_exception(err)
            self._finish(task_id, Status.LOAD_FAILED, start, body)
            return
        view[SLOT_PHASE] = Phase.RUNNING
        values, errors = _apply(fn, mode, items, view)
        view[SLOT_PHASE] = Phase.DUMPING
        status, body = _encode_results(values, errors)
        self._finish(task_id, status, start, body)

    def _finish(self, task_id: int, status: Status, start: int, body: bytes) -> None:
        self.view[SLOT_PHASE] = Phase.IDLE
        spent = (time.monotonic_ns() - start) / 1e9
        self.reply(frame_head(Kind.RESULT, len(body), RESULT_HEAD.pack(task_id, status, spent)), body)


def _apply(fn: Callable[..., Any], mode: int, items: list[Any], view: memoryview) -> tuple[list[Any], dict[int, bytes] | None]:
    """Run every item, publishing its index first, so a death names the exact item.

    The ``try`` sits outside the tight loops (a failing item restarts the loop after it):
    this keeps the per-item cost of a chunk close to a bare ``map``.
    """
    values: list[Any] = []
    append = values.append
    errors: dict[int, bytes] | None = None
    n = len(items)
    slot = SLOT_ITEM
    k = 0
    while k < n:
        try:
            rest = items[k:] if k else items
            if mode == Mode.MAP:
                for k, x in enumerate(rest, k):  # noqa: B020 - k is read back after an exception
                    view[slot] = k
                    append(fn(x))
            elif mode == Mode.STAR:
                for k, x in enumerate(rest, k):  # noqa: B020
                    view[slot] = k
                    append(fn(*x))
            else:
                for k, (args, kwds) in enumerate(rest, k):  # noqa: B020
                    view[slot] = k
                    append(fn(*args, **kwds))
            break
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are the task's error too
            k = len(values)  # the item that raised
            ser.strip_first_frame(exc)
            if errors is None:
                errors = {}
            errors[k] = ser.encode_exception(exc)
            append(None)
            k += 1
    return values, errors


def _encode_results(values: list[Any], errors: dict[int, bytes] | None) -> tuple[Status, bytes]:
    """One pickle for the task's results when it cannot fail to unpickle in the owner, else
    one pickle per item, so the owner fails only an item it cannot rebuild and delivers the
    others (re-running them would run their side effects twice and lose the first results)."""
    if errors is None:
        try:
            # A single item goes as one pickle whatever it holds: failing it fails only it.
            body = ser.dumps(values) if len(values) == 1 else ser.dumps_plain(values)
        except BaseException:
            body = None
        if body is not None:
            return Status.OK, body
    # Slow path: pickle each item alone, failing only those that cannot be pickled.
    pairs: list[tuple[bool, bytes]] = []
    for k, value in enumerate(values):
        if errors is not None and k in errors:
            pairs.append((False, errors[k]))
            continue
        try:
            pairs.append((True, ser.dumps(value)))
        except BaseException as exc:
            err = TaskSerializationError(_PHASE_DUMP, f"{type(exc).__name__}: {ser._safe_str(exc)}")
            err.__cause__ = exc
            pairs.append((False, ser.encode_exception(err)))
    return Status.MIXED, ser.dumps(pairs)


def _initialize(payload: bytes | bytearray) -> None:
    if payload:
        initializer, initargs = ser.loads(payload)
        initializer(*initargs)


def serve(sock_fd: int, slot_fd: int) -> int:
    """Run the worker until the owner says QUIT or goes away; returns the exit code."""
    sock = socket.socket(fileno=sock_fd)
    sock.setblocking(True)
    _mm, view = map_slot(slot_fd)
    os.close(slot_fd)
    worker = _Worker(sock, view)
    reader = FrameReader()
    try:
        return _loop(worker, reader)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the owner is gone; nobody is left to report to
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()


def _loop(worker: _Worker, reader: FrameReader) -> int:
    initialized = False
    while True:
        fr = reader.next()
        if fr is None:
            worker.flush()
            if not reader.fill(worker.sock):
                return 0
            continue
        kind, payload = fr
        if kind == Kind.TASK:
            worker.run_task(payload)
        elif kind == Kind.FUNC:
            worker.remember_function(payload)
        elif kind == Kind.INIT and not initialized:
            initialized = True
            worker.view[SLOT_PHASE] = Phase.INIT
            try:
                _initialize(payload)
            except BaseException as exc:
                ser.strip_first_frame(exc)
                worker.sock.sendall(frame(Kind.INIT_FAILED, ser.encode_exception(exc)))
                return 1
            worker.view[SLOT_PHASE] = Phase.IDLE
            worker.sock.sendall(frame(Kind.READY, head=PID.pack(os.getpid())))
        elif kind == Kind.QUIT:
            worker.flush()
            return 0
