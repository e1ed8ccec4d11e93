"""The dispatcher's state, and the small operations every part of it uses.

The dispatcher is one object, run by one thread (see ``_loop`` for the data flow and the
rules of who may touch what), written as a chain of classes by concern, one module each:

    LoopState (here)    the state itself; reporting to jobs in bursts; failing work;
                        killing workers; the end of the engine (``_finish``)
    WorkerIO  (_io)     the workers' sockets: frames out, frames in, results decoded
    Fleet     (_fleet)  the supervisor and the workers' lives: starting them (the one
                        place that keeps the worker count), their exits and what those
                        mean for the tasks they held
    Loop      (_loop)   the thread: the loop, dispatching, the public calls, stopping

Every attribute is created here, so each part can read them; the comment on each says
which thread may write it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import signal
import socket
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .. import _forks
from .._config import PoolConfig
from .._engine import Job
from .._errors import (
    PoolTerminatedError,
    SerializationPhase,
    TaskSerializationError,
)
from . import _launch
from . import _serialize as ser
from ._control import (
    KillWorker,
)
from ._schedule import Estimates
from ._tasks import Task
from ._workers import WorkerHandle

log = logging.getLogger("robustpool")


_live: weakref.WeakSet[LoopState] = weakref.WeakSet()  # engines not yet finished (see shutdown_all)


class LoopState:
    """The dispatcher's state (see the module docstring). Dispatcher thread only, except
    where an attribute's comment says otherwise."""

    def __init__(self, settings: PoolConfig) -> None:
        self.settings = settings
        self._init_blob = _pickle_initializer(settings)
        # The three queues, in the order a task passes them. Other threads append to the
        # first two (deques: safe under the GIL) and wake the loop; only the loop pops.
        self._calls: deque[Callable[[], None]] = deque()  # what other threads ask the loop to run
        self._submitted: deque[list[Task]] = deque()  # tasks from submit(), not yet seen by the loop
        self._queued: deque[Task] = deque()  # tasks the loop accepted, waiting for a worker (loop only)
        self._workers: dict[int, WorkerHandle] = {}
        self._keys = itertools.count(1)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sleeping = False
        self._closing = False
        self._terminating = False
        self._stopping = False
        self._stopping_politely = False  # a close's stop: the workers quit when told (see Loop._all_quit)
        self._finished = threading.Event()
        self._broken: BaseException | None = None
        self._init_failures = 0
        self._feeders = 0
        self._feeders_lock = threading.Lock()
        self._estimates = Estimates()  # per function: how long its items take
        self._watching = False
        self._touched: set[Job] = set()  # jobs reported to in this burst (see _flush_jobs)
        self._done = self._failed = self._retried = self._timed_out = 0
        self._exits: dict[str, int] = {}
        # Starting workers: the failures in a row, when the next attempt may be made, and
        # whether the pool may have fewer workers than wanted (so the loop must look).
        self._spawn_failures = 0
        # Supervisors that died since one last started a worker: a budget, so a supervisor
        # that cannot start (a broken environment) breaks the pool instead of restarting forever.
        self._supervisor_deaths = 0
        self._spawn_retry_at = 0.0
        self._recount = True  # the worker count may be short of `processes` (see _reconcile)
        self._terminate_until = 0.0  # terminate waits until then for results workers owe
        # Workers running a stopped job's stream task, to kill once the items they finished
        # have arrived (or at the time given), so those are delivered and cleaned, not lost.
        self._kill_when_paid: dict[WorkerHandle, tuple[float, int]] = {}
        self._owner_pid = os.getpid()
        self._supervisor: _launch.SupervisorProcess  # set by Loop, which starts it
        self._thread: threading.Thread  # the dispatcher thread, set by Loop

    def _flush_jobs(self) -> None:
        """End of a burst: each job reported to since the last flush wakes its waiters."""
        touched = self._touched
        while touched:
            touched.pop().flush()

    def _deliver(self, job: Job, index: int, values: Sequence[Any]) -> None:
        self._touched.add(job)
        job.deliver(index, values)

    def _fail(self, job: Job, index: int, exc: BaseException) -> None:
        self._touched.add(job)
        job.fail(index, exc)

    def _drop(self, job: Job, index: int, count: int) -> None:
        self._touched.add(job)
        job.drop(index, count)

    def _wake(self) -> None:
        if self._sleeping:
            self._sleeping = False
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"\0")

    def _kill(self, w: WorkerHandle, sig: int, reason: str | None, task_id: int = 0) -> None:
        """Have the supervisor kill ``w``; with ``task_id`` (its oldest task), only if it has
        not gone past that task (see ``KillWorker``)."""
        after = tuple(t.task_id for t in w.inflight if t.task_id != task_id) if task_id else ()
        with contextlib.suppress(OSError):
            self._supervisor.channel.send(KillWorker(w.key, sig, reason, task_id, after))

    def _kill_known_workers(self) -> None:
        for w in self._workers.values():
            if w.pid:
                with contextlib.suppress(OSError):
                    os.killpg(w.pid, signal.SIGKILL)

    def _count_exit(self, why: str) -> None:
        self._exits[why] = self._exits.get(why, 0) + 1

    def _fail_task(self, t: Task, err: BaseException) -> None:
        for k in range(t.received, t.count):
            self._fail(t.job, t.start + k, err)

    def _fail_queued(self, err: BaseException) -> None:
        while self._queued:
            self._fail_task(self._queued.popleft(), err)
        while self._submitted:
            for t in self._submitted.popleft():
                self._fail_task(t, err)

    def _drop_queued(self, job: Job) -> None:
        keep: deque[Task] = deque()
        for t in self._queued:
            if t.job is job:
                self._drop(job, t.start, t.count)
            else:
                keep.append(t)
        self._queued = keep

    def _fail_everything(self, err: BaseException) -> None:
        self._fail_queued(err)
        for w in self._workers.values():
            while w.inflight:
                self._fail_task(w.inflight.popleft(), err)

    def _closing_done(self) -> bool:
        """True once a closed pool has no work left (then workers are not replaced)."""
        if not self._closing or self._queued or self._submitted:
            return False
        if any(w.inflight for w in self._workers.values()):
            return False
        with self._feeders_lock:
            return self._feeders == 0

    def _finish(self) -> None:
        self._fail_everything(self._broken or PoolTerminatedError())
        self._flush_jobs()
        self._close_sockets()
        _live.discard(self)
        _forks.unregister(self)
        self._finished.set()

    def forget_after_fork(self) -> None:
        """In a child forked from the owner: close our copies of every descriptor, so the
        supervisor still sees the owner's death as the end of its control socket. Nothing
        is sent: the sockets are shared with the owner, whose pool goes on."""
        _live.discard(self)
        with contextlib.suppress(Exception):
            self._close_sockets()

    def _close_sockets(self) -> None:
        """Close every descriptor this engine holds (the workers' sockets and slots, the
        control socket, the wake-up pair, the selector)."""
        for w in list(self._workers.values()):
            with contextlib.suppress(OSError):
                w.sock.close()
            w.release_slot()
        self._workers.clear()
        with contextlib.suppress(OSError):
            self._supervisor.channel.sock.close()
        with contextlib.suppress(OSError):
            self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _pickle_initializer(config: PoolConfig) -> bytes:
    """The INIT frame's payload: the pickled (initializer, initargs), or empty."""
    if config.initializer is None:
        return b""
    try:
        return ser.dumps((config.initializer, config.initargs))
    except Exception as exc:
        detail = f"cannot pickle the initializer: {exc}"
        raise TaskSerializationError.of(SerializationPhase.PICKLE_TASK, exc, detail=detail)
