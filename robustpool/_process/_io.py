"""The workers' sockets, for the dispatcher (see ``_state``): frames out, frames in, results.

Frames are written with a gathering ``sendmsg``, as much as the socket takes; the rest waits
for the selector to say the socket is writable. Frames in are checked by the reader (see
``_wire``); any surprise is a ProtocolError, and the worker is killed (its task is settled
when its exit is reported).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import signal

from . import _decode as decode
from . import _serialize as ser
from ._relay import RelayJob
from ._state import LoopState
from ._tasks import Task
from ._wire import (
    RESULT_HEAD,
    Kind,
    ProtocolError,
    Status,
)
from ._workers import WorkerHandle, WorkerState

log = logging.getLogger("robustpool")


_PROTOCOL_REASON = (
    "robustpool killed it: it sent bytes that are not robustpool frames on its data socket "
    "(did the task write to file descriptors it inherited?): {}"
)


class WorkerIO(LoopState):
    """The workers' sockets (see the module docstring)."""

    def _queue_frame(self, w: WorkerHandle, kind: Kind, payload: bytes = b"", head: bytes = b"", write: bool = True) -> None:
        w.out.append(memoryview(w.framer.frame(kind, payload, head)))
        if write:
            self._write(w)

    def _write(self, w: WorkerHandle) -> None:
        if w.eof:
            w.out.clear()
            return
        out = w.out
        try:
            while out:
                sent = w.sock.sendmsg(list(itertools.islice(out, 64)))
                while sent:
                    head = out[0]
                    if sent >= len(head):
                        sent -= len(head)
                        out.popleft()
                    else:
                        out[0] = head[sent:]
                        sent = 0
        except BlockingIOError:
            pass
        except OSError:
            out.clear()  # the worker is gone; its WorkerExited report will settle its tasks
            self._on_worker_eof(w)
            return
        want_write = bool(out)
        if want_write != w.writing:
            w.writing = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self._selector.modify(w.sock, events, self._selector.get_key(w.sock).data)

    def _on_worker(self, w: WorkerHandle, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self._read(w)
        if mask & selectors.EVENT_WRITE and not w.eof:
            self._write(w)

    def _read(self, w: WorkerHandle, drain: bool = False) -> None:
        while not w.eof:
            try:
                alive = w.reader.fill(w.sock)
            except BlockingIOError:
                alive = True
                drain = False
            except ProtocolError as exc:
                self._on_protocol_error(w, str(exc))
                return
            except OSError:
                alive = False
            try:
                for kind, payload in w.reader.frames():
                    self._on_frame(w, kind, payload)
            except ProtocolError as exc:
                self._on_protocol_error(w, str(exc))
                return
            if not alive:
                self._on_worker_eof(w)
            if not drain:
                return

    def _on_protocol_error(self, w: WorkerHandle, why: str) -> None:
        """The worker's bytes are not frames: stop reading it and have it killed. Its task
        is settled when the exit is reported, with the reason in its WorkerLostError."""
        if w.broken is not None:
            return
        w.broken = _PROTOCOL_REASON.format(why)
        log.error("robustpool: worker %s: %s", w.pid, w.broken)
        self._on_worker_eof(w)
        self._kill(w, signal.SIGKILL, w.broken)

    def _on_worker_eof(self, w: WorkerHandle) -> None:
        # The worker closed its end: it exited or is exiting. What happened to its tasks
        # is decided when the supervisor reports the exit status (WorkerExited).
        if not w.eof:
            w.eof = True
            w.out.clear()
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(w.sock)

    def _on_frame(self, w: WorkerHandle, kind: int, payload: bytes | bytearray) -> None:
        if kind == Kind.RESULT:
            self._on_result(w, payload, memoryview(payload)[RESULT_HEAD.size :])
        elif kind == Kind.RESULT_REF:
            if w.arena is None:
                raise ProtocolError("an arena result from a worker that has no arena")
            # Counted as read even if it is dropped or refused: the worker may reuse it.
            w.arena.consumed += 1
            with w.arena.result(payload, RESULT_HEAD.size) as body:
                self._on_result(w, payload, body)
        elif kind == Kind.READY:
            w.ready = True
            self._init_failures = 0
        elif kind == Kind.INIT_FAILED:
            try:
                exc = ser.decode_exception(payload)
            except Exception as err:
                raise ProtocolError(f"an INIT_FAILED frame that does not decode: {err!r}") from err
            w.init_error = ser.format_exception(exc)

    def _on_result(self, w: WorkerHandle, payload: bytes | bytearray, body: memoryview) -> None:
        """A RESULT frame (``body``: its payload, in the frame or in the arena): check it
        against the task it must be for, then deliver or fail its items. Anything that does
        not fit is a ProtocolError (the worker is killed)."""
        task_id, status, spent, first, count = RESULT_HEAD.unpack_from(payload)
        if not w.inflight:
            # Its task was already settled (the pool broke while it ran): nobody waits.
            log.debug("robustpool: dropping a result of worker %s for settled task %s", w.pid, task_id)
            return
        t = w.inflight[0]
        if status == Status.FAILED:
            count = t.count - first
        if task_id != t.task_id or status not in Status._value2member_map_ or first != t.received:
            raise ProtocolError(f"a result for task {task_id} item {first}, expected task {t.task_id} item {t.received}")
        if count < 1 or first + count > t.count:
            raise ProtocolError(f"a result for items {first}..{first + count - 1} of a {t.count}-item task")
        if w.arena is not None:
            w.arena.answered(task_id)  # it unpickled the task's items before it ran any
        if status == Status.FAILED and t.item_deadline and count > 1:
            # The worker could not load a task of items the pool batched (an argument that
            # fails to unpickle): each was a call of its own to the user, so each runs again
            # alone, and only the culprit fails.
            self._took(w, t, first, count, spent)
            self._queued.extendleft(reversed(t.split(range(first, t.count))))
            return
        if isinstance(t.job, RelayJob):  # a Dask node's job: its owner unpickles (see _relay)
            self._took(w, t, first, count, spent)
            self._touched.add(t.job)
            t.job.relay(t.start + first, count, status, bytes(body), spent)  # a copy: the arena's region is reused
            return
        try:
            decoded = decode.load(status, body, count)
        except ProtocolError:
            raise
        except BaseException as exc:
            self._took(w, t, first, count, spent)
            self._failed += decode.report_unloadable(t, first, count, exc, self._fail)
            return
        self._took(w, t, first, count, spent)
        if status == Status.OK:  # the common case, without the general report's calls
            self._touched.add(t.job)
            t.job.deliver(t.start + first, decoded)
            self._done += count
            return
        done, failed = decode.report(t, first, count, status, decoded, self._deliver, self._fail)
        self._done += done
        self._failed += failed

    def _took(self, w: WorkerHandle, t: Task, first: int, count: int, spent: float) -> None:
        """Items ``first .. first+count-1`` of ``t`` (the worker's oldest task) arrived."""
        t.received = first + count
        if t.received >= t.count:
            w.inflight.popleft()
            if not w.inflight and not w.accepting:
                self._retire(w)
        self._estimates.learn(t.func.func_id, spent, count, t.count)

    def _retire(self, w: WorkerHandle) -> None:
        if w.state is not WorkerState.QUITTING:
            w.state = WorkerState.QUITTING
            self._queue_frame(w, Kind.QUIT)
