"""The dispatcher: one thread per pool that owns the task table and every socket.

Data flow (all arrows are sockets; the supervisor never sees task data)::

    user threads --submit(tasks)/call(fn)--> _submitted/_calls --wakeup--> dispatcher thread
    dispatcher --TASK/FUNC/INIT frames--> worker k        (one duplex socket per worker)
    dispatcher <--RESULT/READY frames----- worker k
    dispatcher <==large payloads, both ways==> worker k's arena   (shared memory: _arena)
    dispatcher --SpawnWorker/KillWorker/Shutdown--> supervisor
    dispatcher <--WorkerStarted/WorkerExited/Goodbye-- supervisor
    dispatcher --deliver/fail/drop--> jobs (AsyncResult, MapResult, IMapIterator, futures)

Who may touch what: ``_queued``, ``_workers`` and everything about workers and sockets
belong to the dispatcher thread alone. Other threads only append to ``_calls`` /
``_submitted`` (deques, safe under the GIL) and wake the dispatcher. Jobs lock themselves.

The dispatcher is written as a chain of classes by concern (see ``_state``); this module is
the thread itself: its loop, the dispatching of tasks to workers, the calls other threads
make, and stopping.

Attribution: a worker publishes the task and phase it is in to its progress slot (see
``_wire``). When the supervisor reports a death, the dispatcher first reads every complete
result the worker managed to send, then reads the slot: the task in it (if not idle) is the
culprit and fails or is retried; every other task queued on that worker goes back to the
front of the queue without counting as a failure.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from .. import _forks
from .._config import PoolConfig
from .._engine import Job
from .._errors import (
    PoolTerminatedError,
    RobustPoolError,
)
from .._stats import PoolStats, WorkerStats
from . import _arena, _reaper
from . import _serialize as ser
from ._attribution import owes_items
from ._control import (
    TERM_GRACE,
    Shutdown,
)
from ._fleet import TERM_FLUSH_WAIT, Fleet
from ._state import _live
from ._tasks import Task
from ._wire import (
    ARENA,
    FUNC_CACHE,
    FUNC_HEAD,
    ITEM_DEADLINE,
    STREAM,
    TASK_HEAD,
    Kind,
)
from ._workers import WorkerHandle, WorkerState

log = logging.getLogger("robustpool")


_QUIT_GRACE = 2.0  # how long idle workers get to quit by themselves on close
_EXIT_WAIT = 5.0  # bound on waiting for the supervisor to exit


def _load(w: WorkerHandle) -> int:
    return len(w.inflight)


# The most payload bytes queued on one worker that already holds two tasks. Two big tasks
# keep a worker busy; more (an imap's window holds ~32 MiB) only spread over more of its
# arena, whose pages each process faults in once per pool, and come back as a burst of
# results that the owner holds at once. Measured on 1 MiB echoes in fresh pools: ~25% more
# throughput and ~20% less owner CPU per task than the time-based depth alone (11-16 tasks).
_BYTES_AHEAD = 4 << 20


def _too_much_ahead(w: WorkerHandle, head: Task) -> bool:
    """Whether ``w`` holds enough big payloads (only summed when ``head`` is big itself:
    tiny tasks, the ones with deep queues, never pay for the sum)."""
    if len(head.payload) < _arena.MIN_BYTES:
        return False
    return sum(len(t.payload) for t in w.inflight) >= _BYTES_AHEAD


class Loop(Fleet):
    """The dispatcher thread and everything it owns (see the module docstring); the
    thread-safe face other threads use is ``ProcessEngine`` (``_process._engine``)."""

    def __init__(self, settings: PoolConfig) -> None:
        super().__init__(settings)
        self._supervisor = self._start_supervisor()
        try:
            if settings.memory_limit is not None:
                self._watch()
            self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
            # The first wave of workers is asked for here, before the dispatcher thread
            # exists (so it still owns nothing): from that thread it would wait for the GIL
            # while the caller goes on to submit work, and the first result would come
            # several milliseconds later. The thread starts the rest (see _reconcile).
            self._reconcile()
            self._thread = threading.Thread(target=self._run, name="robustpool-dispatcher", daemon=True)
            self._thread.start()
        except BaseException:
            # No thread, no pool (say "can't start new thread" under a thread limit): leave
            # nothing behind, and let the caller see why.
            self._supervisor.kill()
            self._supervisor.wait(_EXIT_WAIT)
            self._close_sockets()
            raise
        _live.add(self)
        _forks.register(self)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def broken(self) -> BaseException | None:
        return self._broken

    def submit(self, tasks: list[Task]) -> None:
        self._submitted.append(tasks)
        self._wake()
        if self._finished.is_set():
            # Nobody will take them (the pool ended, or its dispatcher died): fail them
            # here. Each batch is popped by exactly one thread, so none fails twice.
            err = self._broken or PoolTerminatedError()
            failed: set[Job] = set()
            while True:
                try:
                    batch = self._submitted.popleft()
                except IndexError:
                    break
                for t in batch:
                    failed.add(t.job)
                    self._fail_task(t, err)
            for job in failed:
                job.flush()

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the dispatcher thread."""
        self._calls.append(fn)
        self._wake()

    def cancel(self, job: Job) -> None:
        self.call(lambda: self._drop_queued(job))

    def kill(self, job: Job) -> None:
        self.call(lambda: self._stop_job(job))

    def cancel_all(self) -> None:
        done = threading.Event()

        def drop_all() -> None:
            self._take_posted()  # tasks submitted before this call are dropped too
            keep: deque[Task] = deque()
            for t in self._queued:
                if t.job.cancellable:
                    self._drop(t.job, t.start + t.received, t.count - t.received)
                else:
                    keep.append(t)
            self._queued = keep
            self._flush_jobs()
            done.set()

        self.call(drop_all)
        if not self._finished.is_set():
            done.wait(TERM_GRACE)  # a moment: the loop runs posted calls every turn

    def kill_idle_worker(self, killed: Callable[[int], None]) -> None:
        """SIGKILL one worker that is ready and holds no task, if there is one, and call
        ``killed(pid)`` (on the dispatcher thread). For chaos testing: a death between
        tasks, which must cost nothing but a replacement. The worker takes no new task
        meanwhile (DRAINING, with no QUIT sent), so the kill cannot land in one."""

        def pick() -> None:
            for w in self._workers.values():
                if w.pid and w.ready and w.accepting and not w.eof and not w.inflight:
                    w.state = WorkerState.DRAINING
                    self._recount = True
                    self._kill(w, signal.SIGKILL, None)
                    killed(w.pid)
                    return

        self.call(pick)

    def batch_size(self, func_id: int, ahead: int) -> int:
        return self._estimates.batch_size(func_id, ahead, self.settings.processes)

    def hold(self) -> None:
        with self._feeders_lock:
            self._feeders += 1

    def release(self) -> None:
        with self._feeders_lock:
            if self._feeders <= 0:  # a job releasing twice: a bug, and it must not hide others
                log.error("robustpool: internal error: a feeder was released twice")
            self._feeders = max(0, self._feeders - 1)
        self._wake()

    def close(self) -> None:
        self.call(self._begin_close)

    def terminate(self) -> None:
        self.call(self._begin_terminate)

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._finished.wait(0.1):
            if not self._thread.is_alive():
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
        if threading.current_thread() is not self._thread:
            # The thread ends right after setting _finished; wait for it so that a pool
            # built next sees a single-threaded owner again and can fork its supervisor.
            self._thread.join(1.0)
        return True

    def pids(self) -> list[int]:
        return [w.pid for w in list(self._workers.values()) if w.pid is not None]

    @property
    def supervisor_pid(self) -> int:
        return self._supervisor.pid

    def _run(self) -> None:
        try:
            while not self._finished.is_set():
                self._step()
        except BaseException as exc:  # pragma: no cover - a bug in robustpool
            log.critical("robustpool: the dispatcher thread crashed; the pool is broken", exc_info=exc)
            self._broken = RobustPoolError(f"internal error in the dispatcher thread: {exc!r}")
            self._broken.__cause__ = exc
            self._fail_everything(self._broken)
            self._supervisor.kill()
            self._kill_known_workers()
            self._finish()

    def _step(self) -> None:
        self._take_posted()
        if self._kill_when_paid:
            self._kill_paid()
        self._reconcile()
        self._dispatch()
        self._flush_jobs()
        if self._maybe_stop():
            return
        self._sleeping = True
        events = self._selector.select(self._sleep_for())
        self._sleeping = False
        for key, mask in events:
            if self._finished.is_set():
                return  # _finish() closed the sockets these events are about
            key.data(mask)
        self._flush_jobs()

    def _sleep_for(self) -> float | None:
        """How long the loop may sleep: until a message, or the next thing it must check
        by itself (stopping, terminate's wait for owed results, a spawn retry)."""
        if self._calls or self._submitted:
            return 0.0
        if self._stopping or self._terminating:
            return 0.05
        if self._kill_when_paid:
            return 0.005  # a worker owes items it finished: look again soon
        if self._spawn_failures and self._broken is None:
            return max(0.0, self._spawn_retry_at - time.monotonic())
        return None

    def _on_wake(self, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _take_posted(self) -> None:
        while self._calls:
            self._calls.popleft()()
        while self._submitted:
            tasks = self._submitted.popleft()
            if self._broken is not None or self._terminating:
                err = self._broken or PoolTerminatedError()
                for t in tasks:
                    self._fail_task(t, err)
            else:
                self._queued.extend(tasks)

    def _dispatch(self) -> None:
        if not self._queued:
            return
        open_workers = [w for w in self._workers.values() if w.accepting and not w.eof]
        if not open_workers:
            return
        touched: set[WorkerHandle] = set()
        queued = self._queued
        depth_of: tuple[int, bool] | None = None  # the queue is mostly one call's tasks: one estimate
        depth = 0
        while queued:
            w = open_workers[0] if len(open_workers) == 1 else min(open_workers, key=_load)
            head = queued[0]
            key = (head.func.func_id, head.job.cancellable)
            if key != depth_of:
                depth_of, depth = key, self._estimates.depth(*key)
            if len(w.inflight) >= depth or (len(w.inflight) >= 2 and _too_much_ahead(w, head)):
                break
            t = queued.popleft()
            if not t.job.claim():
                self._drop(t.job, t.start, t.count)
                continue
            self._assign(t, w)
            touched.add(w)
            if not w.accepting:
                open_workers.remove(w)
                if not open_workers:
                    break
        for w in touched:
            self._write(w)

    def _assign(self, t: Task, w: WorkerHandle) -> None:
        fid = t.func.func_id
        if fid not in w.funcs:
            self._queue_frame(w, Kind.FUNC, t.blob, FUNC_HEAD.pack(fid), write=False)
            w.funcs[fid] = None
            if len(w.funcs) > FUNC_CACHE:
                del w.funcs[next(iter(w.funcs))]
        if t.timeout and not self._watching:
            self._watch()
        flags = (STREAM if t.stream else 0) | (ITEM_DEADLINE if t.item_deadline else 0)
        arena = w.arena
        consumed = arena.consumed if arena is not None else 0
        ref = arena.place(t.task_id, t.payload) if arena is not None else None
        if ref is not None:  # a large payload, now in the worker's arena (see _arena)
            head = TASK_HEAD.pack(t.task_id, fid, t.mode, flags | ARENA, t.timeout, consumed)
            w.out.append(memoryview(w.framer.frame(Kind.TASK, ref, head)))
        else:
            head = TASK_HEAD.pack(t.task_id, fid, t.mode, flags, t.timeout, consumed)
            # Header and payload go out as separate buffers (sendmsg gathers them): a large
            # payload is never copied in the owner.
            w.out.append(memoryview(w.framer.head(Kind.TASK, len(t.payload), head)))
            w.out.extend(map(memoryview, ser.parts(t.payload)))
        w.inflight.append(t)
        w.assigned += 1
        limit = self.settings.maxtasksperchild
        if limit is not None and w.assigned >= limit:
            # Recycle: no more tasks for this one, and its replacement starts now so queued
            # work is not delayed by the swap.
            w.state = WorkerState.DRAINING
            self._recount = True
            self._count_exit("recycled (maxtasksperchild)")
            log.debug("robustpool: worker %s did %s tasks; recycling it", w.pid, w.assigned)
            self._reconcile()

    def stats(self) -> PoolStats:
        """A snapshot; read without stopping the dispatcher, so counts may be a moment old."""
        workers = tuple(WorkerStats(w.pid, w.assigned, w.rss) for w in list(self._workers.values()))
        replaced = tuple(sorted(self._exits.items()))
        return PoolStats(
            sum(1 for w in workers if w.pid is not None),
            self._done,
            self._failed,
            self._retried,
            self._timed_out,
            sum(n for _, n in replaced),
            replaced,
            workers,
        )

    def _begin_close(self) -> None:
        self._closing = True

    def _begin_terminate(self) -> None:
        if self._terminating:
            return
        self._terminating = True
        self._closing = True
        for w in list(self._workers.values()):
            self._read(w, drain=True)  # complete results already sent still count
        # Queued work fails now; tasks inside workers fail when each worker's exit is
        # reported, so a result that still arrives first is delivered (or cleaned).
        self._fail_queued(PoolTerminatedError())
        self._terminate_until = time.monotonic() + TERM_FLUSH_WAIT
        self._stop_unless_owed()

    def _stop_unless_owed(self) -> None:
        """Kill the workers, unless one still owes finished items (checked every turn).

        A stream task replies item by item, so items that finished before the one running
        now are on their way (within a few milliseconds: see the worker's flusher). They
        are waited for, up to TERM_FLUSH_WAIT, so that they are delivered or cleaned
        instead of dying with the worker: the cleanup promise covers a terminate mid-chunk.
        """
        if self._stopping:
            return
        waiting = time.monotonic() < self._terminate_until
        if waiting and any(not w.eof and owes_items(w.slot_view, w.inflight) for w in self._workers.values()):
            return
        self._begin_stop(TERM_GRACE, polite=False)

    def _begin_stop(self, grace: float, polite: bool) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stopping_politely = polite
        self._stop_deadline = time.monotonic() + 2 * grace + _EXIT_WAIT
        for w in self._workers.values():
            self._retire(w)
        with contextlib.suppress(OSError):
            self._supervisor.channel.send(Shutdown(grace, polite))

    def _maybe_stop(self) -> bool:
        if not self._stopping:
            if self._terminating:
                self._stop_unless_owed()
            elif self._closing_done():
                self._begin_stop(_QUIT_GRACE, polite=True)
            return False
        if self._all_quit():
            # Nothing is left to wait for but the processes' own exit: the supervisor reaps
            # its workers, and _reaper reaps the supervisor (see there).
            _reaper.adopt(self._supervisor)
            self._finish()
            return True
        if time.monotonic() > self._stop_deadline:
            log.error("robustpool: the supervisor did not stop in time; killing it")
            self._supervisor.kill()
            self._kill_known_workers()
            self._supervisor.wait(1.0)
            self._finish()
            return True
        return self._finished.is_set()

    def _all_quit(self) -> bool:
        """A polite stop is over once every worker has closed its socket with nothing in
        flight: a worker told to QUIT closes it after its last byte (results, then its
        stdout and stderr), before its process exits (``_worker.serve``). A worker still
        starting, or one whose end the supervisor still holds, has not closed it yet."""
        if not self._stopping_politely:
            return False
        return all(w.eof and not w.inflight for w in self._workers.values())


def shutdown_all(dispatchers: Iterable[Loop] = ()) -> None:
    """Terminate every live pool (at interpreter exit); bounded."""
    live = list(dispatchers) or [d for d in list(_live) if isinstance(d, Loop)]
    for d in live:
        d.terminate()
    for d in live:
        d.join(timeout=TERM_GRACE + _EXIT_WAIT)


for _cls in (
    PoolStats,
    WorkerStats,
):
    _cls.__module__ = "robustpool"  # as imported by users (see _errors)
