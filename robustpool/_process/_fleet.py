"""The supervisor and the workers' lives, for the dispatcher (see ``_state``).

* Starting workers: ``_reconcile`` is the one place that keeps the worker count (at most
  _MAX_STARTING requests outstanding, failed starts retried with backoff, a budget that ends
  in WorkerStartError).
* The supervisor's messages: a worker started, exited (``_on_exit``: what its death means
  for the tasks it held, decided by ``_attribution``), could not be forked, uses too much
  memory; RSS samples. The supervisor itself dying (``_on_supervisor_gone``): a new one.
* Stopping a cancelled job (``_stop_job``): killing the workers that run it, once the items
  they finished have arrived.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import selectors
import signal
import time

from .._engine import Job
from .._errors import (
    InitializerError,
    PoolTerminatedError,
    RobustPoolError,
    WorkerStartError,
    describe_exitcode,
)
from . import _forkserver, _launch
from ._attribution import Outcome, SlotReading, owes_items, read_slot, settle
from ._control import (
    CANCELLED,
    TIMEOUT,
    Goodbye,
    MemoryHigh,
    Samples,
    SpawnFailed,
    SpawnWorker,
    Watch,
    WorkerExited,
    WorkerStarted,
)
from ._io import WorkerIO
from ._tasks import Task
from ._wire import (
    BUSY,
    Kind,
    Phase,
)
from ._workers import WorkerHandle, WorkerState, open_worker

log = logging.getLogger("robustpool")

TERM_FLUSH_WAIT = 0.5  # how long a worker that owes finished items is waited for before a kill


_WATCH_INTERVAL = 0.02  # how often the supervisor checks deadlines, once any task has one
_INIT_FAILURES = 3  # consecutive initializer failures that break the pool
_MAX_STARTING = 8  # spawn requests outstanding at once (a wide pool starts in waves)
_SPAWN_BACKOFF = 0.05  # first wait after a failed spawn; doubles with each failure in a row
_SPAWN_BACKOFF_MAX = 1.0
_SPAWN_BUDGET = 8  # failures in a row, with no worker alive, that break the pool


_SUPERVISOR_RESTARTS = 5  # supervisors that may die in a row before one starts a worker


class Fleet(WorkerIO):
    """The supervisor and the workers' lives (see the module docstring)."""

    def _start_supervisor(self) -> _launch.SupervisorProcess:
        proc = _launch.start(_forkserver.choose(self.settings.start_method))
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

    def _watch(self) -> None:
        self._watching = True
        with contextlib.suppress(OSError):
            self._supervisor.channel.send(Watch(_WATCH_INTERVAL, self.settings.memory_limit))

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
                    self._supervisor_deaths = 0
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
        cancelled = msg.reason == CANCELLED
        if not expected:
            self._count_exit(msg.reason if msg.reason in (TIMEOUT, CANCELLED) else describe_exitcode(msg.exitcode))
            # A death during a task is reported to that task's caller too; one while idle
            # is only seen here, so it is louder. One we asked for is no news.
            level = logging.INFO if slot.phase in BUSY or cancelled else logging.WARNING
            who = f"worker {msg.pid}" if msg.pid else "a worker that was still starting"
            why = f" ({reason})" if reason and msg.reason != TIMEOUT else ""
            log.log(level, "robustpool: %s exited with %s%s", who, describe_exitcode(msg.exitcode), why)
        if self._terminating:
            while w.inflight:
                self._fail_task(w.inflight.popleft(), PoolTerminatedError())
        requeue: list[Task] = []
        for t in w.inflight:
            if t.cancelled:
                self._drop(t.job, t.start + t.received, t.count - t.received)
            elif slot.phase in BUSY and t.task_id == slot.task_id and not cancelled:
                requeue += self._blame(t, msg, slot, reason)
            else:
                # Never started; or killed for a cancelled task it had just finished
                # (the kill landed in the next one): nobody's doing, no attempt counted.
                requeue += t.rest()
        w.inflight.clear()
        self._queued.extendleft(reversed(requeue))
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
            self._queued.extendleft(reversed([r for t in w.inflight for r in t.rest()]))
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
        self._supervisor_deaths += 1
        again = self._supervisor_deaths < _SUPERVISOR_RESTARTS
        log.error(
            "robustpool: the supervisor (pid %s) died with %s; %s",
            self._supervisor.pid,
            describe_exitcode(code),
            "starting a new one" if again else f"it died {self._supervisor_deaths} times in a row before starting a worker",
        )
        # Its workers die with it (PR_SET_PDEATHSIG); make sure of it where that is missing.
        self._kill_known_workers()
        for w in list(self._workers.values()):
            self._on_exit(WorkerExited(w.key, w.pid or 0, -signal.SIGKILL, "its supervisor died"))
        if not again:
            self._broken = WorkerStartError(
                self._supervisor_deaths,
                f"the supervisor died {self._supervisor_deaths} times in a row before it started a worker"
                f" (last: {describe_exitcode(code)}); its log lines say why",
            )
            self._fail_everything(self._broken)
            self._finish()
            return
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

    def _stop_job(self, job: Job) -> None:
        """Drop ``job``'s queued tasks, and kill each worker running one of its tasks.

        Only a worker whose oldest task is the job's can be running it: that worker is
        killed (its process group) and replaced at once. The job's tasks queued behind
        other work are marked, and dropped wherever they end: run to the end (the job
        ignores the result) or sent back by a death.
        """
        self._drop_queued(job)
        for w in list(self._workers.values()):
            mine = [t for t in w.inflight if t.job is job]
            if not mine:
                continue
            for t in mine:
                t.cancelled = True
            first = w.inflight[0]
            if first.job is job and w.state is not WorkerState.QUITTING:
                w.state = WorkerState.DRAINING  # no new work; its exit is counted as cancelled
                self._recount = True
                # The kill names the task: the worker may have finished it already (its
                # result not read yet) and be running the next one, someone else's.
                if first.stream and owes_items(w.slot_view, w.inflight):
                    self._kill_when_paid[w] = (time.monotonic() + TERM_FLUSH_WAIT, first.task_id)
                else:
                    self._kill(w, signal.SIGKILL, CANCELLED, first.task_id)
        self._reconcile()

    def _kill_paid(self) -> None:
        """Kill the workers of stopped jobs that owe no finished items now (see _stop_job)."""
        now = time.monotonic()
        for w, (until, task_id) in list(self._kill_when_paid.items()):
            if w.eof or self._workers.get(w.key) is not w:
                del self._kill_when_paid[w]  # gone by itself meanwhile
            elif not any(t.task_id == task_id for t in w.inflight):
                # Every item arrived: the task ended by itself, and the worker (draining)
                # runs what it holds of other jobs, then quits.
                del self._kill_when_paid[w]
            elif now >= until or not owes_items(w.slot_view, w.inflight):
                del self._kill_when_paid[w]
                self._kill(w, signal.SIGKILL, CANCELLED, task_id)
