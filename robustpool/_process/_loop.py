"""The owner's engine: one dispatcher thread that owns the task table and every socket.

Data flow (all arrows are sockets; the supervisor never sees task data)::

    user threads --submit(tasks)/call(fn)--> inbox --wakeup--> dispatcher thread
    dispatcher --TASK/FUNC/INIT frames--> worker k        (one duplex socket per worker)
    dispatcher <--RESULT/READY frames----- worker k
    dispatcher --SpawnWorker/KillWorker/Shutdown--> supervisor
    dispatcher <--WorkerStarted/WorkerExited/Goodbye-- supervisor
    dispatcher --deliver/fail/drop--> jobs (AsyncResult, MapResult, IMapIterator, futures)

Who may touch what: ``_pending``, ``_workers`` and everything about workers and sockets
belong to the dispatcher thread alone. Other threads only append to ``_inbox`` /
``_incoming`` (deques, safe under the GIL) and wake the dispatcher. Jobs lock themselves.

Attribution: a worker publishes the task and phase it is in to its progress slot (see
``_wire``). When the supervisor reports a death, the dispatcher first reads every complete
result the worker managed to send, then reads the slot: the task in it (if not idle) is the
culprit and fails or is retried; every other task queued on that worker goes back to the
front of the queue without counting as a failure.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import selectors
import signal
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import _forks
from .._config import PoolConfig
from .._engine import Job
from .._errors import (
    InitializerError,
    PoolTerminatedError,
    RobustPoolError,
    SerializationPhase,
    TaskSerializationError,
    WorkerStartError,
    describe_exitcode,
)
from .._stats import PoolStats, WorkerStats
from . import _decode as decode
from . import _serialize as ser
from . import _supervisor
from ._attribution import Outcome, SlotReading, owes_items, read_slot, settle
from ._control import (
    TERM_GRACE,
    TIMEOUT,
    Goodbye,
    KillWorker,
    MemoryHigh,
    Samples,
    Shutdown,
    SpawnFailed,
    SpawnWorker,
    Watch,
    WorkerExited,
    WorkerStarted,
)
from ._schedule import Estimates
from ._tasks import Task
from ._wire import (
    BUSY,
    FUNC_CACHE,
    FUNC_HEAD,
    ITEM_DEADLINE,
    RESULT_HEAD,
    STREAM,
    TASK_HEAD,
    Kind,
    Phase,
    ProtocolError,
    Status,
)
from ._workers import WorkerHandle, WorkerState, open_worker

log = logging.getLogger("robustpool")

_WATCH_INTERVAL = 0.02  # how often the supervisor checks deadlines, once any task has one
_INIT_FAILURES = 3  # consecutive initializer failures that break the pool
_QUIT_GRACE = 2.0  # how long idle workers get to quit by themselves on close
_EXIT_WAIT = 5.0  # bound on waiting for the supervisor to exit
_TERM_FLUSH_WAIT = 0.5  # terminate waits this long for finished items a worker still owes
_MAX_STARTING = 8  # spawn requests outstanding at once (a wide pool starts in waves)
_SPAWN_BACKOFF = 0.05  # first wait after a failed spawn; doubles with each failure in a row
_SPAWN_BACKOFF_MAX = 1.0
_SPAWN_BUDGET = 8  # failures in a row, with no worker alive, that break the pool
_PROTOCOL_REASON = (
    "robustpool killed it: it sent bytes that are not robustpool frames on its data socket "
    "(did the task write to file descriptors it inherited?): {}"
)


_live: weakref.WeakSet[Loop] = weakref.WeakSet()


class Loop:
    """The dispatcher thread and everything it owns (see the module docstring); the
    thread-safe face other threads use is ``ProcessEngine`` (``_process._engine``)."""

    def __init__(self, settings: PoolConfig) -> None:
        self.settings = settings
        self._init_blob = _pickle_initializer(settings)
        self._inbox: deque[Callable[[], None]] = deque()
        self._incoming: deque[list[Task]] = deque()
        self._pending: deque[Task] = deque()
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
        self._spawn_retry_at = 0.0
        self._recount = True  # the worker count may be short of `processes` (see _reconcile)
        self._terminate_until = 0.0  # terminate waits until then for results workers owe
        self._owner_pid = os.getpid()
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

    # -- public, thread-safe --

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def broken(self) -> BaseException | None:
        return self._broken

    def submit(self, tasks: list[Task]) -> None:
        self._incoming.append(tasks)
        self._wake()
        if self._finished.is_set():
            # Nobody will take them (the pool ended, or its dispatcher died): fail them
            # here. Each batch is popped by exactly one thread, so none fails twice.
            err = self._broken or PoolTerminatedError()
            failed: set[Job] = set()
            while True:
                try:
                    batch = self._incoming.popleft()
                except IndexError:
                    break
                for t in batch:
                    failed.add(t.job)
                    for k in range(t.received, t.count):
                        self._fail(t.job, t.start + k, err)
            for job in failed:
                job.flush()

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the dispatcher thread."""
        self._inbox.append(fn)
        self._wake()

    def cancel(self, job: Job) -> None:
        self.call(lambda: self._drop_pending(job))

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

    def _wake(self) -> None:
        if self._sleeping:
            self._sleeping = False
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"\0")

    # -- supervisor --

    def _start_supervisor(self) -> _supervisor.SupervisorProcess:
        method = self.settings.start_method
        if method is None:
            fork_ok = hasattr(os, "fork") and _supervisor.owner_is_single_threaded()
            method = "fork" if fork_ok else "spawn"
        proc = _supervisor.start(method)
        proc.channel.sock.settimeout(10.0)
        self._selector.register(proc.channel.sock, selectors.EVENT_READ, self._on_control)
        return proc

    def _reconcile(self) -> None:
        """Keep ``processes`` workers accepting work: the one place that starts workers.

        Called every loop turn. Workers still starting count as accepting; at most
        _MAX_STARTING spawn requests are outstanding, so a wide pool starts in waves the
        supervisor can keep up with, and the dispatcher never blocks on the control
        socket. A failed start is retried after a backoff that doubles with each failure
        in a row (see _spawn_failed); nothing is ever dropped silently.
        """
        if not self._recount or self._stopping or self._broken is not None or self._closing_done():
            return
        if self._supervisor.channel.sock.fileno() < 0 or time.monotonic() < self._spawn_retry_at:
            return
        accepting = starting = 0
        for w in self._workers.values():
            accepting += w.accepting
            starting += w.pid is None
        wanted = self.settings.processes - accepting
        room = _MAX_STARTING - starting
        for _ in range(min(wanted, room)):
            if not self._spawn():
                return
        self._recount = wanted > room  # short by more than one wave: look again as workers start

    def _spawn(self) -> bool:
        """Ask the supervisor for one worker; False (and the failure counted) if we cannot."""
        key = next(self._keys)

        def ask(sock_fd: int, slot_fd: int) -> None:
            self._supervisor.channel.send(SpawnWorker(key), fds=(sock_fd, slot_fd))

        try:
            w = open_worker(key, ask)
        except OSError as exc:
            # The supervisor may be gone (then _on_control notices and starts a new one) or
            # out of room; either way this is one failed start, retried after a backoff.
            self._spawn_failed(f"cannot start a worker: {exc}")
            return False
        self._workers[key] = w
        self._selector.register(w.sock, selectors.EVENT_READ, functools.partial(self._on_worker, w))
        self._queue_frame(w, Kind.INIT, self._init_blob)
        return True

    def _spawn_failed(self, why: str) -> None:
        """One worker could not be started: back off, and break the pool once the budget is
        spent with no worker alive (the pool could then never run anything)."""
        self._spawn_failures += 1
        self._recount = True
        n = self._spawn_failures
        self._spawn_retry_at = time.monotonic() + min(_SPAWN_BACKOFF_MAX, _SPAWN_BACKOFF * 2 ** (n - 1))
        if self._stopping:
            return
        alive = any(w.pid is not None for w in self._workers.values())
        level = logging.ERROR if n == 1 or n % 10 == 0 else logging.DEBUG
        log.log(level, "robustpool: could not start a worker (%s failure(s) in a row, retrying): %s", n, why)
        if not alive and n >= _SPAWN_BUDGET and self._broken is None:
            self._broken = WorkerStartError(n, why)
            log.error("robustpool: %s", self._broken)
            self._fail_everything(self._broken)

    # -- the loop --

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
        self._take_inbox()
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
        if self._inbox or self._incoming:
            return 0.0
        if self._stopping or self._terminating:
            return 0.05
        if self._spawn_failures and self._broken is None:
            return max(0.0, self._spawn_retry_at - time.monotonic())
        return None

    def _on_wake(self, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass

    def _take_inbox(self) -> None:
        while self._inbox:
            self._inbox.popleft()()
        while self._incoming:
            tasks = self._incoming.popleft()
            if self._broken is not None or self._terminating:
                err = self._broken or PoolTerminatedError()
                for t in tasks:
                    self._fail_task(t, err)
            else:
                self._pending.extend(tasks)

    # -- dispatching --

    def _dispatch(self) -> None:
        if not self._pending:
            return
        open_workers = [w for w in self._workers.values() if w.accepting and not w.eof]
        if not open_workers:
            return
        touched: set[WorkerHandle] = set()
        pending = self._pending
        while pending:
            w = min(open_workers, key=lambda w: len(w.inflight))
            head = pending[0]
            if len(w.inflight) >= self._estimates.depth(head.func.func_id, head.job.cancellable):
                break
            t = pending.popleft()
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
        head = TASK_HEAD.pack(t.task_id, fid, t.mode, flags, t.timeout)
        # Header and payload go out as separate buffers (sendmsg gathers them): a large
        # payload is never copied in the owner.
        w.out.append(memoryview(w.framer.head(Kind.TASK, len(t.payload), head)))
        w.out.append(memoryview(t.payload))
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

    def _watch(self) -> None:
        self._watching = True
        with contextlib.suppress(OSError):
            self._supervisor.channel.send(Watch(_WATCH_INTERVAL, self.settings.memory_limit))

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

    # -- worker sockets --

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
            self._on_result(w, payload)
        elif kind == Kind.READY:
            w.ready = True
            self._init_failures = 0
        elif kind == Kind.INIT_FAILED:
            try:
                exc = ser.decode_exception(payload)
            except Exception as err:
                raise ProtocolError(f"an INIT_FAILED frame that does not decode: {err!r}") from err
            w.init_error = ser.format_exception(exc)

    def _on_result(self, w: WorkerHandle, payload: bytes | bytearray) -> None:
        """A RESULT frame: check it against the task it must be for, then deliver or fail
        its items. Anything that does not fit is a ProtocolError (the worker is killed)."""
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
        body = memoryview(payload)[RESULT_HEAD.size :]
        try:
            decoded = decode.load(status, body, count)
        except ProtocolError:
            raise
        except BaseException as exc:
            self._took(w, t, first, count, spent)
            self._failed += decode.report_unloadable(t, first, count, exc, self._fail)
            return
        self._took(w, t, first, count, spent)
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

    # -- supervisor events --

    def _on_control(self, mask: int) -> None:
        try:
            alive = self._supervisor.channel.receive()
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            alive = False
        for msg, _fds in self._supervisor.channel.messages():
            if isinstance(msg, WorkerStarted):
                w = self._workers.get(msg.key)
                if w is not None:
                    w.pid = msg.pid
                    self._spawn_failures = 0
                    self._recount = True
                    log.debug("robustpool: worker %s started", msg.pid)
            elif isinstance(msg, WorkerExited):
                self._on_exit(msg)
            elif isinstance(msg, SpawnFailed):
                self._on_spawn_failed(msg)
            elif isinstance(msg, MemoryHigh):
                self._on_memory_high(msg)
            elif isinstance(msg, Samples):
                for key, rss in msg.rss:
                    if (sampled := self._workers.get(key)) is not None:
                        sampled.rss = rss
            elif isinstance(msg, Goodbye):
                pass
        if not alive:
            self._on_supervisor_gone()

    def _on_exit(self, msg: WorkerExited) -> None:
        """A worker was reaped: count what it sent, then settle the tasks it held.

        The task in its slot (if any) is the culprit: it fails or is retried (_blame). A
        task it finished whose result never arrived is in the slot as REPLYING, and is
        blamed too, so a death while replying is never re-queued for free. Every other task
        it held never started: back to the front of the queue, no attempt counted.
        """
        w = self._workers.pop(msg.key, None)
        self._recount = True
        if w is None:
            return
        if not w.eof:
            self._read(w, drain=True)  # every complete result it sent counts
            self._on_worker_eof(w)
        w.sock.close()
        w.pid = msg.pid
        slot = read_slot(w.slot_view, w.inflight, w.pid)
        reason = msg.reason or w.broken or slot.fault_reason()
        expected = (w.state is WorkerState.QUITTING and msg.exitcode == 0) or self._stopping
        if not expected:
            self._count_exit(msg.reason if msg.reason == TIMEOUT else describe_exitcode(msg.exitcode))
            # A death during a task is reported to that task's caller too; one while idle
            # is only seen here, so it is louder.
            level = logging.INFO if slot.phase in BUSY else logging.WARNING
            who = f"worker {msg.pid}" if msg.pid else "a worker that was still starting"
            why = f" ({reason})" if reason and msg.reason != TIMEOUT else ""
            log.log(level, "robustpool: %s exited with %s%s", who, describe_exitcode(msg.exitcode), why)
        if self._terminating:
            while w.inflight:
                self._fail_task(w.inflight.popleft(), PoolTerminatedError())
        requeue: list[Task] = []
        for t in w.inflight:
            if slot.phase in BUSY and t.task_id == slot.task_id:
                requeue += self._blame(t, msg, slot, reason)
            else:
                requeue += t.rest()
        w.inflight.clear()
        self._pending.extendleft(reversed(requeue))
        w.release_slot()
        if not self._stopping and (w.init_error is not None or (slot.phase == Phase.INIT and not w.ready)):
            self._on_init_failure(w, msg)

    def _blame(self, t: Task, msg: WorkerExited, slot: SlotReading, reason: str | None) -> list[Task]:
        """Settle the task a worker died in (see ``_attribution.settle``); returns the
        tasks to run again."""
        verdict = settle(t, msg, slot, reason, self.settings.retries, self._stopping)
        k, pid = verdict.item, msg.pid
        if verdict.outcome is Outcome.RETRY:
            log.warning("robustpool: retrying %s after worker %s died (%s)", t.describe(k), pid, describe_exitcode(msg.exitcode))
            self._retried += 1
        elif verdict.error is not None:
            if verdict.outcome is Outcome.TIMED_OUT:
                self._timed_out += 1
                elapsed = getattr(verdict.error, "elapsed", 0.0)
                log.warning(
                    "robustpool: %s ran past task_timeout (%.2f s); its worker %s was killed", t.describe(k), elapsed, pid
                )
            self._failed += 1
            self._fail(t.job, t.start + k, verdict.error)
        return verdict.again

    def _on_memory_high(self, msg: MemoryHigh) -> None:
        w = self._workers.get(msg.key)
        if w is None or not w.accepting:
            return
        limit = self.settings.memory_limit or 0
        log.warning(
            "robustpool: worker %s uses %.0f MiB, over memory_limit (%.0f MiB); recycling it after its current task",
            w.pid,
            msg.rss / 2**20,
            limit / 2**20,
        )
        w.state = WorkerState.DRAINING
        self._recount = True
        self._count_exit("recycled (memory_limit)")
        self._reconcile()  # its replacement starts now, so queued work is not delayed
        if not w.inflight:
            self._retire(w)

    def _count_exit(self, why: str) -> None:
        self._exits[why] = self._exits.get(why, 0) + 1

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

    def _on_init_failure(self, w: WorkerHandle, msg: WorkerExited) -> None:
        self._init_failures += 1
        text = w.init_error or f"the worker died from {describe_exitcode(msg.exitcode)} while running the initializer\n"
        log.error("robustpool: the initializer failed in worker %s:\n%s", msg.pid, text)
        if self._init_failures >= _INIT_FAILURES and self._broken is None:
            self._broken = InitializerError(self._init_failures, text)
            self._fail_everything(self._broken)
            for other in list(self._workers.values()):
                self._kill(other, signal.SIGKILL, "the pool is broken")

    def _on_spawn_failed(self, msg: SpawnFailed) -> None:
        """The supervisor could not fork the worker: its queued tasks never started."""
        w = self._workers.pop(msg.key, None)
        self._recount = True
        if w is not None:
            self._on_worker_eof(w)
            w.sock.close()
            self._pending.extendleft(reversed([r for t in w.inflight for r in t.rest()]))
            w.release_slot()
        self._spawn_failed(msg.error)

    def _on_supervisor_gone(self) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._supervisor.channel.sock)
        self._supervisor.channel.sock.close()
        self._supervisor.wait(1.0)
        if self._stopping:
            self._kill_known_workers()
            self._finish()
            return
        code = self._supervisor.poll()
        log.error(
            "robustpool: the supervisor (pid %s) died with %s; starting a new one", self._supervisor.pid, describe_exitcode(code)
        )
        # Its workers die with it (PR_SET_PDEATHSIG); make sure of it where that is missing.
        self._kill_known_workers()
        for w in list(self._workers.values()):
            self._on_exit(WorkerExited(w.key, w.pid or 0, -signal.SIGKILL, "its supervisor died"))
        try:
            self._supervisor = self._start_supervisor()
        except (OSError, RobustPoolError) as exc:
            log.error("robustpool: could not start a new supervisor: %s", exc)
            self._broken = WorkerStartError(1, f"cannot start a new supervisor: {exc}")
            self._fail_everything(self._broken)
            self._finish()
            return
        if self._watching or self.settings.memory_limit is not None:
            self._watch()
        self._spawn_failures, self._spawn_retry_at, self._recount = 0, 0.0, True
        self._reconcile()

    def _kill(self, w: WorkerHandle, sig: int, reason: str | None) -> None:
        with contextlib.suppress(OSError):
            self._supervisor.channel.send(KillWorker(w.key, sig, reason))

    def _kill_known_workers(self) -> None:
        for w in self._workers.values():
            if w.pid:
                with contextlib.suppress(OSError):
                    os.killpg(w.pid, signal.SIGKILL)

    # -- failing and dropping --

    def _fail_task(self, t: Task, err: BaseException) -> None:
        for k in range(t.received, t.count):
            self._fail(t.job, t.start + k, err)

    def _fail_queued(self, err: BaseException) -> None:
        while self._pending:
            self._fail_task(self._pending.popleft(), err)
        while self._incoming:
            for t in self._incoming.popleft():
                self._fail_task(t, err)

    def _fail_everything(self, err: BaseException) -> None:
        self._fail_queued(err)
        for w in self._workers.values():
            while w.inflight:
                self._fail_task(w.inflight.popleft(), err)

    def _drop_pending(self, job: Job) -> None:
        keep: deque[Task] = deque()
        for t in self._pending:
            if t.job is job:
                self._drop(job, t.start, t.count)
            else:
                keep.append(t)
        self._pending = keep

    # -- shutting down --

    def _begin_close(self) -> None:
        self._closing = True

    def _closing_done(self) -> bool:
        """True once a closed pool has no work left (then workers are not replaced)."""
        if not self._closing or self._pending or self._incoming:
            return False
        if any(w.inflight for w in self._workers.values()):
            return False
        with self._feeders_lock:
            return self._feeders == 0

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
        self._terminate_until = time.monotonic() + _TERM_FLUSH_WAIT
        self._stop_unless_owed()

    def _stop_unless_owed(self) -> None:
        """Kill the workers, unless one still owes finished items (checked every turn).

        A stream task replies item by item, so items that finished before the one running
        now are on their way (within a few milliseconds: see the worker's flusher). They
        are waited for, up to _TERM_FLUSH_WAIT, so that they are delivered or cleaned
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
        if time.monotonic() > self._stop_deadline:
            log.error("robustpool: the supervisor did not stop in time; killing it")
            self._supervisor.kill()
            self._kill_known_workers()
            self._supervisor.wait(1.0)
            self._finish()
            return True
        return self._finished.is_set()

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


def shutdown_all(dispatchers: Iterable[Loop] = ()) -> None:
    """Terminate every live pool (at interpreter exit); bounded."""
    live = list(dispatchers) or list(_live)
    for d in live:
        d.terminate()
    for d in live:
        d.join(timeout=TERM_GRACE + _EXIT_WAIT)


for _cls in (
    PoolStats,
    WorkerStats,
):
    _cls.__module__ = "robustpool"  # as imported by users (see _errors)


def _pickle_initializer(config: PoolConfig) -> bytes:
    """The INIT frame's payload: the pickled (initializer, initargs), or empty."""
    if config.initializer is None:
        return b""
    try:
        return ser.dumps((config.initializer, config.initargs))
    except Exception as exc:
        detail = f"cannot pickle the initializer: {exc}"
        raise TaskSerializationError.of(SerializationPhase.PICKLE_TASK, exc, detail=detail)
