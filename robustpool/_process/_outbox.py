"""A worker's outgoing side: results queued, batched and sent, and the flusher thread.

Replies are batched: results of tasks that were already waiting in the worker's buffer are
sent together, which turns a syscall per task into one per batch for tiny tasks, while a
slow task's result is still sent as soon as it is ready. A finished result is never held
back behind a slow task or item, though: once the worker is busy with a backlog, a flusher
thread looks at the progress slot every few milliseconds, and when one item has been
running since its last look, sends whatever waits.

``Outbox`` is the base of the worker (``_worker._Worker``): the two are one object on the
worker's main thread, split by job. The flusher thread touches only what ``lock`` guards.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from .._errors import SerializationPhase, TaskSerializationError
from . import _serialize as ser
from . import _wire as wire
from ._arena import WorkerArena
from ._wire import (
    RESULT_HEAD,
    SLOT_ITEM,
    SLOT_PHASE,
    SLOT_TASK,
    Entry,
    Framer,
    FrameReader,
    Kind,
    Phase,
    Status,
)

_FLUSH_COUNT = 32
_FLUSH_NS = 1_000_000  # a result waits at most ~1 ms for company before it is sent
# A result of a task that took this long goes at once: batching saves a system call of a few
# microseconds, nothing next to the task, while holding the result delays the owner's next
# dispatch to this worker by a whole task.
_SLOW_TASK_NS = 100_000
# How often the flusher looks at a busy worker. A result waiting behind a slow item is sent
# within two looks (plus the wait for the GIL). Looking more often costs a thread wake-up
# each time, which shows in the per-task overhead of tiny tasks.
_WATCH_S = 0.004

_NOT_BUSY = (Phase.IDLE, Phase.INIT, Phase.REPLYING)  # the flusher has nothing to watch


class SendFailed(Exception):
    """Sending to the owner failed with an OSError other than the owner being gone."""


def too_large(size: int) -> TaskSerializationError:
    return TaskSerializationError(
        SerializationPhase.DUMP_RESULT, f"the pickled result is {size} bytes, over the {wire.MAX_FRAME}-byte limit of one frame"
    )


class Outbox:
    def __init__(self, sock: socket.socket, view: memoryview, arena: WorkerArena | None = None) -> None:
        self.sock = sock
        self.view = view
        self.arena = arena  # its result half is placed in under `lock`
        self.framer = Framer()
        self.out: list[bytes] = []  # frames (and the parts of their payloads) waiting to be sent
        self.first_pending = 0
        # The running stream task's item outcomes: kinds[i] and data[i] are item i's; items
        # before `sealed` are already framed (see _stream and _seal_locked).
        self.stream_task = 0
        self.kinds = bytearray()
        self.data: list[Any] = []
        self.sealed = 0
        self.piece_began = 0
        # Shared with the flusher thread, under `lock`: out, the stream state, `blocked`
        # and the socket's sending side.
        self.lock = threading.Lock()
        self.blocked = False  # the main thread waits for input (it flushed everything first)
        self.armed = False  # the flusher is watching; only it disarms, and only when blocked
        self.wakeup = threading.Event()
        self.flusher: threading.Thread | None = None
        # The flusher thread could not be started (a process or thread limit): results are
        # then sent as soon as they are ready instead of being held for company.
        self.no_flusher = False

    # -- sending --

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def send_pending(self) -> None:
        """Send every finished result now, the running stream task's outcomes too (a chaos
        death "before" an item takes nothing along but that item)."""
        with self.lock:
            if self.stream_task:
                self._seal_locked()
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self.out:
            return
        try:
            self._send_locked()
        except (BrokenPipeError, ConnectionResetError):
            raise  # the owner is gone
        except OSError as exc:
            # The task closed or replaced the socket's descriptor, or the kernel refused:
            # the result cannot leave, so the worker must die and be blamed for it.
            raise SendFailed(str(exc)) from exc

    def _send_locked(self) -> None:
        out = self.out
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

    def _queue_result_locked(self, now: int, head: bytes, body: ser.Payload) -> None:
        """Queue a RESULT: ``head`` is RESULT_HEAD packed, ``body`` its payload, which goes
        through the arena if it is large and there is room (see ``_arena``)."""
        if not self.out:
            self.first_pending = now
        ref = self.arena.place(body) if self.arena is not None else None
        if ref is not None:
            self.out.append(self.framer.frame(Kind.RESULT_REF, ref, head))
            return
        self.out.append(self.framer.head(Kind.RESULT, len(body), head))
        self.out.extend(ser.parts(body))

    def _flush_if_due_locked(self, now: int) -> None:
        if len(self.out) >= 2 * _FLUSH_COUNT or now - self.first_pending >= _FLUSH_NS:
            self._flush_locked()

    def send_frame(self, kind: Kind, payload: bytes = b"", head: bytes = b"") -> None:
        """Build and send one frame at once (the handshake)."""
        with self.lock:
            self.out.append(self.framer.frame(kind, payload, head))
            self._flush_locked()

    def reply(self, task_id: int, status: Status, start: int, body: ser.Payload, first: int, count: int) -> None:
        """Queue a RESULT for items ``first .. first+count-1``; send the queue when due.

        The frame is numbered and queued under the lock, so frames leave in the order they
        were numbered even while the flusher seals a stream task's outcomes.
        """
        now = time.monotonic_ns()
        with self.lock:
            self._queue_result_locked(now, RESULT_HEAD.pack(task_id, status, (now - start) / 1e9, first, count), body)
            if now - start >= _SLOW_TASK_NS or self.no_flusher:
                self._flush_locked()
            else:
                self._flush_if_due_locked(now)

    def _seal_locked(self) -> None:
        """Frame the stream task's outcomes recorded since the last seal, as RESULTs."""
        n = len(self.data)  # kinds[k] is always stored before data[k]
        first = self.sealed
        if n <= first:
            return
        now = time.monotonic_ns()
        spent = (now - self.piece_began) / 1e9
        self._seal_range_locked(first, n, spent, now)
        self.sealed, self.piece_began = n, now

    def _seal_range_locked(self, first: int, end: int, spent: float, now: int) -> None:
        """One RESULT for outcomes ``first .. end-1``, or halves of it if it is too large."""
        # Builtin scalars, bytes and encoded errors only: no user code runs here, so the
        # flusher thread may do this while the main thread runs an item.
        body = ser.dumps_entries(bytes(self.kinds[first:end]), self.data[first:end])
        if len(body) + RESULT_HEAD.size > wire.MAX_FRAME:
            if end - first > 1:
                mid = (first + end) // 2
                self._seal_range_locked(first, mid, spent, now)
                self._seal_range_locked(mid, end, 0.0, now)
                return
            body = ser.dumps_entries(bytes([Entry.ERROR]), [ser.encode_exception(too_large(len(body)))])
        self._queue_result_locked(now, RESULT_HEAD.pack(self.stream_task, Status.ITEMS, spent, first, end - first), body)

    # -- the flusher --

    def arm(self) -> None:
        """Results wait while the main thread works on: have the flusher watch.

        Started on first need, so a worker that only ever has one task at a time (it
        flushes whenever its input runs dry) never has a second thread.
        """
        with self.lock:
            if self.armed or self.no_flusher:
                if self.no_flusher:
                    self._flush_locked()
                return
            if self.flusher is None:
                flusher = threading.Thread(target=self._flusher, name="robustpool-flusher", daemon=True)
                try:
                    flusher.start()
                except RuntimeError:  # "can't start new thread": a process or thread limit
                    self.no_flusher = True
                    self._flush_locked()
                    return
                self.flusher = flusher
            self.armed = True
            self.wakeup.set()

    def _flusher(self) -> None:
        view = self.view
        last = (-1, -1)
        try:
            while True:
                self.wakeup.wait()
                time.sleep(_WATCH_S)
                with self.lock:
                    if self.blocked:
                        self.armed = False
                        self.wakeup.clear()
                        last = (-1, -1)
                        continue
                    mark = (view[SLOT_TASK], view[SLOT_ITEM])
                    if mark == last and view[SLOT_PHASE] not in _NOT_BUSY:
                        # The same item since the last look: send what waits.
                        self._seal_locked()
                        self._flush_locked()
                    last = mark
        except (OSError, SendFailed):
            return  # the main thread finds out on its own next send or read

    def wait_for_input(self, reader: FrameReader) -> bool:
        """Flush, then block until more input arrives; False at end of input."""
        with self.lock:
            self._flush_locked()
            self.blocked = True
        # Every result is with the socket now: a death from here on is nobody's doing.
        self.view[SLOT_PHASE] = Phase.IDLE
        try:
            return reader.fill(self.sock)
        finally:
            with self.lock:
                self.blocked = False
