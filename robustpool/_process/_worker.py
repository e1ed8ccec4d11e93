"""The worker loop: handshake, publish progress, run, reply. No pool logic lives here.

A worker is forked by the supervisor and talks only to the owner, over its own data socket
(see ``_wire`` for the frames). It never decides anything: it runs what it is sent, in
order, and reports. Before each phase of a task it stores the phase in its progress slot,
so that if it dies the owner knows exactly what it was doing. Replies are queued and
batched by ``_outbox``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from .._errors import SerializationPhase, TaskSerializationError
from . import _serialize as ser
from . import _wire as wire
from ._arena import WorkerArena, half_of
from ._outbox import Outbox, SendFailed, too_large
from ._wire import (
    ARENA,
    FUNC_CACHE,
    FUNC_HEAD,
    ITEM_DEADLINE,
    PID,
    REF,
    RESULT_HEAD,
    SLOT_DEADLINE,
    SLOT_ERRNO,
    SLOT_FAULT,
    SLOT_ITEM,
    SLOT_PHASE,
    SLOT_STARTED,
    SLOT_TASK,
    STREAM,
    TASK_HEAD,
    TO_WORKER,
    Entry,
    Fault,
    FrameReader,
    Kind,
    Mode,
    Phase,
    ProtocolError,
    Status,
    map_slot_untracked,
)

# How long loading a task may take when it has a time limit (or the limit, if longer): a
# hang in an argument's unpickling is still killed, a slow import is not blamed on the run.
_LOAD_NS = 30_000_000_000
_MAX_TIMEOUT = 1e10  # seconds; the owner refuses more than 1e9, so a larger value is garbage
_current: _Worker | None = None  # this process's worker, once serve() made it


def send_pending() -> None:
    """In a worker: send the results it finished and still holds (see Outbox.send_pending)."""
    if _current is not None:
        _current.send_pending()


_KEEP: list[object] = []


class _Worker(Outbox):
    """The running side: the function cache, tasks and stream tasks (replies go through ``Outbox``)."""

    def __init__(self, sock: socket.socket, view: memoryview, arena: WorkerArena | None) -> None:
        super().__init__(sock, view, arena)
        self.funcs: dict[int, bytes | Callable[..., Any]] = {}

    def remember_function(self, payload: bytes | bytearray) -> None:
        (func_id,) = FUNC_HEAD.unpack_from(payload)
        # Unpickled lazily, inside a task's LOADING phase, so a crash while unpickling a
        # function is blamed on the task that needed it.
        self.funcs[func_id] = bytes(payload[FUNC_HEAD.size :])
        while len(self.funcs) > FUNC_CACHE:
            del self.funcs[next(iter(self.funcs))]

    def function(self, func_id: int) -> Callable[..., Any]:
        fn = self.funcs[func_id]
        if isinstance(fn, bytes):
            fn = ser.loads(fn)
            if not callable(fn):
                raise TypeError(f"the task's function unpickled to a non-callable {type(fn).__name__}")
            self.funcs[func_id] = fn
        return fn

    # -- running --

    def run_task(self, payload: bytes | bytearray) -> None:
        task_id, func_id, mode, flags, timeout, consumed = TASK_HEAD.unpack_from(payload)
        arena = self.arena
        if arena is not None and consumed > arena.freed:
            with self.lock:  # the flusher may be placing a result
                arena.consumed(consumed)
        if flags & ARENA:
            if arena is None or len(payload) != TASK_HEAD.size + REF.size:
                raise ProtocolError("an arena task for a worker without an arena, or a malformed one")
            pickled = arena.task(payload, TASK_HEAD.size)
        else:
            pickled = memoryview(payload)[TASK_HEAD.size :]
        with pickled:
            self._run(task_id, func_id, mode, flags, timeout, pickled)

    def _run(self, task_id: int, func_id: int, mode: int, flags: int, timeout: float, pickled: memoryview) -> None:
        if self.out and not self.armed:
            self.arm()
        view = self.view
        start = time.monotonic_ns()
        timeout_ns = int(timeout * 1e9) if 0 < timeout <= _MAX_TIMEOUT else 0
        # Loading (unpickling the function, which may import its module on a fresh worker,
        # and the items) has its own allowance: the task's limit counts its run.
        view[SLOT_DEADLINE] = start + max(timeout_ns, _LOAD_NS) if timeout_ns else 0
        view[SLOT_STARTED] = start
        view[SLOT_ITEM] = 0
        view[SLOT_TASK] = task_id
        view[SLOT_PHASE] = Phase.LOADING  # stored last: readers trust the fields above
        try:
            fn = self.function(func_id)
            items = ser.loads(pickled)
        except BaseException as exc:
            err = TaskSerializationError.of(SerializationPhase.LOAD_TASK, exc)
            view[SLOT_PHASE] = Phase.REPLYING
            self.reply(task_id, Status.FAILED, start, ser.encode_exception(err), 0, 0)  # count 0: every item
            return
        if timeout_ns:
            now = time.monotonic_ns()
            view[SLOT_DEADLINE] = now + timeout_ns
            view[SLOT_STARTED] = now
        view[SLOT_PHASE] = Phase.RUNNING
        if flags & STREAM and len(items) > 1:
            self._stream(task_id, fn, mode, items, start, timeout_ns if flags & ITEM_DEADLINE else 0)
            return
        values, errors = _apply(fn, mode, items, view)
        view[SLOT_PHASE] = Phase.DUMPING
        status, body = _encode_results(values, errors)
        view[SLOT_PHASE] = Phase.REPLYING
        if len(body) + RESULT_HEAD.size <= wire.MAX_FRAME:
            self.reply(task_id, status, start, body, 0, len(items))
            return
        # Too large for one frame: item by item, and an item too large for one fails alone.
        for k in range(len(values)):
            kind, blob = (Entry.ERROR, errors[k]) if errors is not None and k in errors else _entry(values[k])
            self.reply(task_id, Status.ITEMS, start, ser.dumps_entries(bytes([kind]), [blob]), k, 1)

    def _stream(self, task_id: int, fn: Callable[..., Any], mode: int, items: list[Any], start: int, timeout_ns: int) -> None:
        """Run the items of a stream task, each with its own outcome (and, with
        ``timeout_ns``, its own deadline).

        Either the pool batched these items only to save frames on the way in (to the user
        each is a task of its own, whose result must not wait for its neighbours), or the
        job cleans results nobody will take, so finished items must reach the owner even if
        a later one never ends. Outcomes are recorded as they come and framed together at
        the end, unless an item is slow: then the flusher frames and sends those recorded so
        far.
        """
        view = self.view
        kinds: bytearray = bytearray()
        data: list[Any] = []
        with self.lock:
            self.stream_task, self.kinds, self.data, self.sealed, self.piece_began = task_id, kinds, data, 0, start
        scalars = ser.SCALARS
        for k, x in enumerate(items):
            if k:
                if timeout_ns:
                    now = time.monotonic_ns()
                    view[SLOT_DEADLINE] = now + timeout_ns
                    view[SLOT_STARTED] = now
                view[SLOT_ITEM] = k
                if self.no_flusher:
                    with self.lock:
                        self._seal_locked()
                        self._flush_locked()
                elif not self.armed:
                    self.arm()
            try:
                if mode == Mode.MAP:
                    value = fn(x)
                elif mode == Mode.STAR:
                    value = fn(*x)
                else:
                    value = fn(*x[0], **x[1])
            except BaseException as exc:  # SystemExit and KeyboardInterrupt are the item's error too
                ser.strip_first_frame(exc)
                kinds.append(Entry.ERROR)
                data.append(ser.encode_exception(exc))
                continue
            if type(value) in scalars:
                kinds.append(Entry.VALUE)
                data.append(value)
                continue
            view[SLOT_PHASE] = Phase.DUMPING
            kind, blob = _entry(value)
            view[SLOT_PHASE] = Phase.RUNNING
            kinds.append(kind)
            data.append(blob)
        view[SLOT_PHASE] = Phase.REPLYING
        now = time.monotonic_ns()
        with self.lock:
            self._seal_locked()
            self.stream_task, self.kinds, self.data, self.sealed = 0, bytearray(), [], 0
            if self.no_flusher:
                self._flush_locked()
            else:
                self._flush_if_due_locked(now)


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


def _entry(value: Any) -> tuple[Entry, Any]:
    """One item's outcome for an ITEMS result: a builtin scalar as is, anything else
    pickled alone (so that the owner can fail it alone if it cannot rebuild it)."""
    if type(value) in ser.SCALARS:
        if type(value) in (bytes, str) and len(value) + RESULT_HEAD.size > wire.MAX_FRAME:
            return Entry.ERROR, ser.encode_exception(too_large(len(value)))
        return Entry.VALUE, value
    try:
        blob = ser.dumps(value)
    except BaseException as exc:
        err = TaskSerializationError.of(SerializationPhase.DUMP_RESULT, exc)
        return Entry.ERROR, ser.encode_exception(err)
    if len(blob) + RESULT_HEAD.size > wire.MAX_FRAME:
        return Entry.ERROR, ser.encode_exception(too_large(len(blob)))
    return Entry.PICKLED, blob


def _encode_results(values: list[Any], errors: dict[int, bytes] | None) -> tuple[Status, ser.Payload]:
    """One pickle for the task's results when it cannot fail to unpickle in the owner, else
    one entry per item, so the owner fails only an item it cannot rebuild and delivers the
    others (re-running them would run their side effects twice and lose the first results)."""
    if errors is None:
        try:
            # A single item goes as one pickle whatever it holds: failing it fails only it.
            body = ser.dump_payload(values) if len(values) == 1 else ser.dumps_plain(values)
        except BaseException:
            body = None
        if body is not None:
            return Status.OK, body
    kinds = bytearray()
    data: list[Any] = []
    for k, value in enumerate(values):
        if errors is not None and k in errors:
            kind, blob = Entry.ERROR, errors[k]
        else:
            kind, blob = _entry(value)
        kinds.append(kind)
        data.append(blob)
    return Status.ITEMS, ser.dumps_entries(bytes(kinds), data)


def _initialize(payload: bytes | bytearray) -> None:
    if payload:
        initializer, initargs = ser.loads(payload)
        initializer(*initargs)


def serve(sock_fd: int, slot_fd: int) -> int:
    """Run the worker until the owner says QUIT or goes away; returns the exit code.

    If the loop itself fails (the task broke the socket, the owner's bytes are not frames,
    a bug), the reason goes into the slot's fault fields for the owner to read, and the
    exit code is EXIT_LOOP_FAILED: the task in the slot is blamed like any other death.
    """
    # Close-on-exec: a program the task starts (os.system, close_fds=False) must not get
    # the owner's data socket, to write into it or keep it open after the worker is gone.
    os.set_inheritable(sock_fd, False)
    sock = socket.socket(fileno=sock_fd)
    sock.setblocking(True)
    size = os.fstat(slot_fd).st_size
    mm, view = map_slot_untracked(slot_fd, size)
    os.close(slot_fd)
    _KEEP.append(mm)  # never closed, never collected: see map_slot_untracked
    half = half_of(size)
    global _current
    worker = _current = _Worker(sock, view, WorkerArena(mm, half) if half else None)
    reader = FrameReader(TO_WORKER)
    try:
        return _loop(worker, reader)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the owner is gone; nobody is left to report to
    except BaseException as exc:
        fault, errno = _fault_of(exc)
        view[SLOT_ERRNO] = errno
        view[SLOT_FAULT] = fault
        if fault in (Fault.PROTOCOL, Fault.LOOP):
            import traceback

            print(f"robustpool: worker {os.getpid()} stops: its loop failed", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
        return wire.EXIT_LOOP_FAILED
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        with contextlib.suppress(BaseException):
            # The owner's end of the socket sees its end now, not once the kernel has torn
            # this process down (that is slow for a fork of a big owner): everything it
            # will ever get from us, stdout included, is sent. What happened to the tasks is
            # still decided by the exit status the supervisor reports, not by this.
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(BaseException):
            sock.detach()  # the fd dies with the process; no ResourceWarning on the way out


def _fault_of(exc: BaseException) -> tuple[Fault, int]:
    if isinstance(exc, ProtocolError):
        return Fault.PROTOCOL, 0
    if isinstance(exc, SendFailed) and isinstance(exc.__cause__, OSError):
        return Fault.SEND, exc.__cause__.errno or 0
    if isinstance(exc, OSError):
        return Fault.RECEIVE, exc.errno or 0
    return Fault.LOOP, 0


def _loop(worker: _Worker, reader: FrameReader) -> int:
    initialized = False
    while True:
        fr = reader.next()
        if fr is None:
            if not worker.wait_for_input(reader):
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
                worker.send_frame(Kind.INIT_FAILED, ser.encode_exception(exc))
                return 1
            worker.view[SLOT_PHASE] = Phase.IDLE
            worker.send_frame(Kind.READY, head=PID.pack(os.getpid()))
        elif kind == Kind.QUIT:
            worker.flush()
            return 0
