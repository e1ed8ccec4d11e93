"""The chaos runner: drives pools through seeded mixed workloads and checks every outcome.

One run is a sequence of *phases*; each phase builds one :class:`~robustpool.RobustPool`
with randomly chosen options (start method, ``retries``, ``task_timeout``), runs a few
*rounds* on it and closes (or terminates) it. A round launches ``map_async``, a batch of
``apply_async`` and a batch of ``submit`` at once, consumes an ``imap``/``imap_unordered``
in the main thread (sometimes breaking off early), then collects the rest. Chaos events fire
at random points: the supervisor is SIGKILLed, an idle worker is killed from outside, the
pool is terminated mid-round, and now and then an owner subprocess gets Ctrl-C (SIGINT).

Every item carries a :class:`~stress.faults.Spec` planned from the seed; its fault decides
which outcomes are allowed (see :func:`allowed_outcomes`). After a phase's pool has been
joined, every item is settled: exactly one outcome (a checked value, an allowed error, or a
cleanup after an early break), and no result file left behind. After the run, no process,
file descriptor, temp file or shared-memory entry of ours may remain (:class:`ShmSampler`
tells our entries from other programs'). Everything is recorded in a
:class:`~stress.report.Report`.

Every wait is bounded (``WAIT`` seconds, counted as a hang when it expires), and a watchdog
thread dumps every thread's stack and exits non-zero if the whole run overruns by 60 s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import faulthandler
import gc
import json
import logging
import multiprocessing
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from robustpool import RobustPool
from robustpool._chaos._leaks import (
    FD_ALLOWANCE,
    ShmSampler,
    ShmStat,
    alive,
    descendants,
    fd_count,
    fd_targets,
    shm_leaks,
    shm_snapshot,
    wait_stopped,
    wchan,
)
from robustpool._chaos._plan import Rates
from robustpool._chaos._session import ChaosRun

from .faults import KILLING, Fault, Outcome, Spec, UnpicklableArg, expected_check, run, run_star
from .report import Report

WAIT = 30.0  # seconds: the bound on every single wait for a result
OVERRUN = 60.0  # seconds past the budget after which the watchdog kills the run
SETTLE = 10.0  # seconds to wait for processes that are on their way out
CHILD_WAIT = 30.0  # seconds: the bound on the Ctrl-C'd owner subprocess
ABANDONED_READS = 500  # reads of an abandoned endless input that count as "never ends"
REPO = Path(__file__).absolute().parents[1]


#: Chaos events, by the names the report counts them under (and ``--exclude`` accepts).
EVENTS = ("early_break", "idle_worker_kill", "sigint_owner", "supervisor_kill", "terminate")


# --- profiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """The shape of a workload; the seed picks everything within these bounds."""

    name: str
    workers: int
    fault_rate: float  # share of items with a fault, in a faulty job
    clean_jobs: float  # share of jobs with no item fault at all
    weights: dict[Fault, float]
    imap_items: tuple[int, int]
    map_items: tuple[int, int]
    apply_items: tuple[int, int]
    chunks: tuple[int, int]
    rounds: tuple[int, int]
    work: float  # max seconds of sleep of a busy item
    busy: float  # share of items that sleep
    timeout: float  # task_timeout of the phases that have one
    timeout_share: float
    payload: tuple[int, int] = (0, 0)  # bytes, for the payload profile
    sup_kill: float = 0.2  # share of phases where the supervisor is killed
    idle_kill: float = 0.3  # share of rounds ending with an idle worker killed
    terminate: float = 0.12  # share of phases ended by terminate() mid-round
    sigint: float = 0.1  # share of phases followed by a Ctrl-C'd owner subprocess
    early: float = 0.4  # share of imaps broken off early
    buffersize: int | None = None  # imap's read-ahead in chunks (default 64: 2 GB of 32 MB items)


_ALL_FAULTS: dict[Fault, float] = {
    Fault.EXCEPTION: 12,
    Fault.SYS_EXIT: 6,
    Fault.MEMORY: 6,
    Fault.SIGKILL: 10,
    Fault.SIGTERM: 6,
    Fault.SIGSEGV: 8,
    Fault.OS_EXIT: 6,
    Fault.UNPICKLABLE_RESULT: 6,
    Fault.UNLOADABLE_RESULT: 5,
    Fault.UNPICKLABLE_EXC: 6,
    Fault.UNPICKLABLE_ARG: 4,
    Fault.SLOW: 3,
}

PROFILES: dict[str, Profile] = {
    "mixed": Profile("mixed", 2, 0.2, 0.25, _ALL_FAULTS, (5, 40), (5, 30), (3, 10), (1, 4), (1, 3), 0.01, 0.3, 1.0, 0.3),
    "load": Profile(
        "load",
        2,
        0.075,
        0.1,
        {**_ALL_FAULTS, Fault.SLOW: 0.15},
        (1000, 5000),
        (1000, 5000),
        (100, 300),
        (1, 32),
        (1, 3),
        0.0,
        0.0,
        0.5,
        0.3,
        sup_kill=0.15,
        idle_kill=0.3,
        terminate=0.1,
        sigint=0.05,
        early=0.3,
    ),
    "payload": Profile(
        "payload",
        2,
        0.3,
        0.2,
        {**_ALL_FAULTS, Fault.SLOW: 1},
        (2, 3),
        (1, 3),
        (1, 2),
        (1, 1),
        (1, 2),
        0.0,
        0.0,
        3.0,
        0.2,
        payload=(8 << 20, 32 << 20),
        buffersize=2,
        sigint=0.0,
    ),
    "wide": Profile("wide", 16, 0.2, 0.25, _ALL_FAULTS, (20, 120), (20, 100), (10, 40), (1, 4), (1, 3), 0.01, 0.3, 1.0, 0.3),
}


@dataclass(frozen=True)
class Options:
    seed: int
    seconds: float
    tasks: int | None = None
    workers: int | None = None
    profile: str = "mixed"
    verbose: bool = False
    exclude: frozenset[str] = frozenset()  # fault kinds and chaos events left out (to bisect)


# --- the ledger ---------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Item:
    """One submitted item and every outcome observed for it."""

    token: str
    fault: Fault
    allowed: frozenset[str]  # "ok" and/or error type names
    check: int
    echo: bool
    values: int = 0
    errors: list[str] = field(default_factory=list)
    cleaned: int = 0


@dataclass(eq=False)
class Job:
    """One API call (or one batch of ``apply_async``/``submit`` calls) and its items."""

    api: str
    jid: int
    items: list[Item]
    early: bool = False  # an iterator closed before it was exhausted
    abandoned: bool = False  # an iterator dropped without close()
    endless: bool = False  # an imap over an endless input
    error: str | None = None  # map_async: the one error the job raised
    note: str = ""


@dataclass
class PhasePlan:
    index: int
    workers: int
    start_method: str | None
    retries: int
    timeout: float | None
    sup_kill: bool
    terminate: bool
    sigint: bool
    rounds: int

    @property
    def extra(self) -> frozenset[str]:
        """Errors any item of this phase may get, from the phase's chaos."""
        out = set()
        if self.sup_kill:
            out.add("WorkerLostError")
        if self.terminate:
            out.add("PoolTerminatedError")
        return frozenset(out)

    def describe(self) -> str:
        return (
            f"phase {self.index}: workers={self.workers} start={self.start_method} retries={self.retries} "
            f"timeout={self.timeout} sup_kill={self.sup_kill} terminate={self.terminate}"
        )


def allowed_outcomes(fault: Fault, once: bool, retries: int) -> frozenset[str]:
    """The outcomes an item with ``fault`` may end with, in a pool with ``retries``."""
    if fault in KILLING:
        return frozenset({"ok"}) if once and retries > 0 else frozenset({"WorkerLostError"})
    return frozenset(
        {
            Fault.NONE: {"ok"},
            Fault.EXCEPTION: {"StressError"},
            Fault.SYS_EXIT: {"SystemExit"},
            Fault.MEMORY: {"MemoryError"},
            Fault.UNPICKLABLE_RESULT: {"TaskSerializationError"},
            Fault.UNLOADABLE_RESULT: {"TaskSerializationError"},
            Fault.UNPICKLABLE_EXC: {"RemoteTaskError"},
            Fault.UNPICKLABLE_ARG: {"TaskSerializationError"},
            Fault.SLOW: {"TaskTimeoutError"},
        }[fault]
    )


def token_of(exc: BaseException) -> str | None:
    """The token a task put in its error (robustpool's own errors carry none)."""
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, str) else None
    message = getattr(exc, "message", None)  # RemoteTaskError
    if isinstance(message, str) and message.startswith("s"):
        return message
    if exc.args and isinstance(exc.args[0], str) and exc.args[0].startswith("s"):
        return exc.args[0].split(" ")[0]
    return None


class _LogCounter(logging.Handler):
    def __init__(self, report: Report, verbose: bool) -> None:
        super().__init__(logging.DEBUG)
        self.report = report
        self.verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        self.report.log_records[record.levelname] += 1
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" [{type(exc).__name__}: {exc}]"
        if record.levelno >= logging.CRITICAL:
            # robustpool logs CRITICAL only when its dispatcher thread crashed: a broken pool.
            self.report.violation("robustpool_crash", text[:400])
        if self.verbose:
            print(f"  [robustpool {record.levelname}] {text[:400]}", file=sys.stderr)
            if record.exc_info and record.levelno >= logging.ERROR:
                import traceback

                traceback.print_exception(*record.exc_info, file=sys.stderr)


# --- the runner ---------------------------------------------------------------------------


class Runner:
    """Runs one seeded chaos run; :meth:`run` returns its report."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.profile = PROFILES[opts.profile]
        self.workers = opts.workers or self.profile.workers
        self.rng = random.Random(opts.seed)
        self.report = Report(opts.seed, opts.profile)
        self.root = Path(tempfile.mkdtemp(prefix=f"robustpool-stress-{opts.seed}-"))
        self.results = self.root / "results"
        self.markers = self.root / "markers"
        self.results.mkdir()
        self.owner_pid = os.getpid()
        self.lock = threading.Lock()
        self.items: dict[str, Item] = {}
        self.tracked: dict[int, psutil.Process] = {}
        self.shm = ShmSampler(self.owner_pid)  # what our processes hold in /dev/shm
        self.start = time.monotonic()
        self.deadline = self.start + opts.seconds
        self.jid = 0
        self.stop_reason = ""
        self.verbose = opts.verbose
        self.stuck = False  # a bounded wait expired
        self.abandoned = False  # an iterator of this pool was dropped without close(): busy workers
        self.killed: set[int] = set()  # workers of this phase the runner killed
        self.terminated = False  # this phase's pool was terminated: all its workers killed

    # -- bookkeeping used from robustpool's threads --

    def cleanup(self, value: Any) -> None:
        """The ``cleanup=`` callback: record the token, remove the result file."""
        with self.lock:
            self.report.cleanups_run += 1
            item = self.items.get(value.token) if isinstance(value, Outcome) else None
            if item is None:
                self.report.violation("wrong_values", f"cleanup got something that is no result of this run: {value!r:.120}")
                self.report.wrong_values += 1
                return
            item.cleaned += 1
        try:
            os.unlink(value.path)
        except FileNotFoundError:
            self.report.violation("duplicates", f"{value.token}: cleanup of a result whose file is already gone")

    def _track(self, pool: RobustPool) -> None:
        pids = [pool.supervisor_pid, *pool.worker_pids()]
        for pid in pids:
            if pid not in self.tracked:
                with contextlib.suppress(psutil.Error):
                    self.tracked[pid] = psutil.Process(pid)
                    self.shm.adopt([pid])

    # -- the whole run --

    def run(self) -> Report:
        rep = self.report
        log = logging.getLogger("robustpool")
        handler = _LogCounter(rep, self.verbose)
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.INFO)
        old_tmp = tempfile.tempdir
        # Anything robustpool or Python put in a temp dir during the run lands in ours.
        tempfile.tempdir = str(self.root)
        gc.collect()
        fds_before = fd_count()
        shm_before = shm_snapshot()  # self.root is older: never counted, even in /dev/shm
        self.shm.start(shm_before)  # after fds_before: its inotify descriptor is closed before fds_after
        # robustpool.testing keeps its own books on every item the phases' pools see (one
        # outcome each; every imap result handed over or cleaned, once): the users' checks
        # run under the suite's workload too. It injects nothing here (the Specs do) and
        # leaves the leak checks to _final_checks.
        books = ChaosRun(self.opts.seed, Rates(kill=0.0, segfault=0.0, exit=0.0, delay=0.0), None, "", leaks=False)
        books.start()
        try:
            phase = 0
            while not self._done():
                self._phase(self._plan(phase))
                phase += 1
                if self.stuck:
                    self.stop_reason = "a hang was detected; stopping so it can be replayed"
                    break
        except Exception as exc:
            rep.violation("runner", f"the runner itself failed: {type(exc).__name__}: {exc}")
            import traceback

            traceback.print_exc()
        finally:
            books_report = books.finish()
            rep.ledger_items, rep.ledger_broken = books_report.items, len(books_report.violations)
            for broken in books_report.violations:
                rep.violation("ledger", broken)
            tempfile.tempdir = old_tmp
            log.removeHandler(handler)
            log.propagate = True
        rep.interrupted = self.stop_reason
        self._final_checks(fds_before, shm_before)
        rep.elapsed = time.monotonic() - self.start
        return rep

    def _done(self) -> bool:
        if time.monotonic() >= self.deadline:
            return True
        return self.opts.tasks is not None and self.report.submitted >= self.opts.tasks

    def _plan(self, index: int) -> PhasePlan:
        p, rng = self.profile, self.rng
        return PhasePlan(
            index=index,
            workers=self.workers,
            start_method=rng.choice(["fork", "fork", "spawn", None]),
            retries=rng.choice([0, 0, 1, 2]),
            timeout=p.timeout if rng.random() < p.timeout_share else None,
            sup_kill=rng.random() < p.sup_kill and "supervisor_kill" not in self.opts.exclude,
            terminate=rng.random() < p.terminate and "terminate" not in self.opts.exclude,
            sigint=rng.random() < p.sigint and "sigint_owner" not in self.opts.exclude,
            rounds=rng.randint(*p.rounds),
        )

    # -- planning items --

    def _new_job(self, api: str, plan: PhasePlan, n: int, fault_rate: float) -> tuple[Job, list[Spec]]:
        """A job of ``n`` planned items."""
        self.jid += 1
        job = Job(api, self.jid, [])
        return job, [self._item(plan, job, self.rng, fault_rate) for _ in range(n)]

    def _endless(self, plan: PhasePlan, job: Job, fault_rate: float) -> Iterator[Spec]:
        """Endless input for an imap the consumer breaks off (README: infinite generators
        work). Items are planned as they are read, from their own seeded generator.

        Once the consumer has dropped its iterator without closing it, nobody should read
        this input again; if someone does (``join()`` reading what an abandoned iterator
        "still owes"), a truly endless input would never end: that is recorded as a hang,
        and the input ends after ``ABANDONED_READS`` more items so the run goes on.
        """
        rng = random.Random(self.rng.random())
        extra = 0
        while True:
            if job.abandoned:
                extra += 1
                if extra > ABANDONED_READS:
                    self.report.hangs += 1
                    self.report.violation(
                        "hangs",
                        f"job {job.jid} {job.api}{job.note}: after the consumer dropped the iterator, its endless input "
                        f"was still read ({ABANDONED_READS} items, and counting) -- with a truly endless input "
                        "close() + join() never returns",
                    )
                    return
            yield self._item(plan, job, rng, fault_rate)

    def _item(self, plan: PhasePlan, job: Job, rng: random.Random, fault_rate: float) -> Spec:
        """Plan the next item of ``job`` and register what it may end as."""
        p = self.profile
        weights = {
            f: w for f, w in p.weights.items() if (f is not Fault.SLOW or plan.timeout) and f.value not in self.opts.exclude
        }
        token = f"s{self.opts.seed}p{plan.index}j{job.jid}i{len(job.items)}"
        fault = rng.choices(list(weights), list(weights.values()))[0] if rng.random() < fault_rate else Fault.NONE
        # Only a fault that kills its worker can be "once": robustpool re-runs the items
        # of a chunk that ran before a crash, and a raise must raise again then.
        once = fault in KILLING and rng.random() < 0.7
        work = rng.uniform(0, p.work) if p.work and rng.random() < p.busy else 0.0
        payload = b""
        echo = False
        if p.payload[1]:
            size = rng.randint(*p.payload) & ~0xFFFF
            payload = rng.randbytes(1 << 16) * (size >> 16)
            echo = rng.random() < 0.5
        arg = UnpicklableArg() if fault is Fault.UNPICKLABLE_ARG else None
        spec = Spec(token, fault.value, once, str(self.results), str(self.markers), self.owner_pid, work, payload, echo, arg)
        allowed = allowed_outcomes(fault, once, plan.retries) | plan.extra
        item = Item(token, fault, allowed, expected_check(token, payload), echo)
        with self.lock:  # also called from join()'s thread, reading an abandoned input
            self.items[token] = item
            job.items.append(item)
            self.report.faults[fault.value] += 1
            self.report.submitted += 1
            self.report.apis[job.api] += 1
        return spec

    # -- observing outcomes --

    def _value(self, job: Job, value: Any, expect: Item | None) -> Item | None:
        rep = self.report
        if not isinstance(value, Outcome):
            rep.wrong_values += 1
            rep.violation("wrong_values", f"job {job.jid} {job.api}: not a result of this run: {value!r:.120}")
            return None
        item = self.items.get(value.token)
        if item is None or item not in job.items:
            rep.wrong_values += 1
            rep.violation("wrong_values", f"job {job.jid} {job.api}: {value.token} does not belong to this job")
            return None
        if expect is not None and item is not expect:
            rep.wrong_values += 1
            rep.violation("wrong_values", f"job {job.jid} {job.api}: got {value.token} where {expect.token} was due")
        if value.check != item.check:
            rep.wrong_values += 1
            rep.violation("wrong_values", f"{item.token}: check {value.check} != expected {item.check}")
        if item.echo and expected_check(item.token, value.echo) != item.check:
            rep.wrong_values += 1
            rep.violation("wrong_values", f"{item.token}: the echoed payload ({len(value.echo)} bytes) is corrupt")
        if "ok" not in item.allowed:
            rep.wrong_errors += 1
            rep.violation("wrong_errors", f"{item.token} ({item.fault}) succeeded but should fail with {sorted(item.allowed)}")
        item.values += 1
        rep.delivered += 1
        try:
            os.unlink(value.path)
        except FileNotFoundError:
            rep.violation("duplicates", f"{item.token}: delivered, but its result file was already cleaned")
        return item

    def _error(self, job: Job, exc: BaseException, expect: Item | None) -> Item | None:
        """Attribute an error to its item and check it is an allowed outcome.

        ``expect`` is the item due (an ordered imap's position, an ``apply_async``'s only
        item); otherwise the item is found from the error's ``task_index`` or the token the
        task put in it. Both must agree when both are known.
        """
        rep = self.report
        kind = type(exc).__name__
        rep.errors[kind] += 1
        found: Item | None = None
        index = getattr(exc, "task_index", None)
        if isinstance(index, int) and 0 <= index < len(job.items):
            found = job.items[index]
        else:
            token = token_of(exc)
            found = next((it for it in job.items if it.token == token), None) if token else None
        if expect is not None and found is not None and found is not expect:
            rep.wrong_errors += 1
            rep.violation("wrong_errors", f"{expect.token} ({job.api}) got the {kind} of {found.token}: {str(exc)[:160]}")
        item = expect or found
        if item is None:
            # Unattributable (PoolTerminatedError carries no position): give it to an item
            # still without outcome that allows it.
            item = next((it for it in job.items if kind in it.allowed and not it.values and not it.errors), None)
        if item is None:
            rep.wrong_errors += 1
            rep.violation("wrong_errors", f"job {job.jid} {job.api}: unattributable {kind}: {str(exc)[:160]}")
            return None
        if kind not in item.allowed:
            rep.wrong_errors += 1
            rep.violation(
                "wrong_errors",
                f"{item.token} ({item.fault}, {job.api}) got {kind}, allowed {sorted(item.allowed)}: {str(exc)[:200]}",
            )
        item.errors.append(kind)
        return item

    def _hang(self, what: str) -> None:
        self.stuck = True  # something may still be blocked: stop after this phase
        self.report.hangs += 1
        self.report.violation("hangs", f"{what} did not finish within {WAIT:.0f} s")

    def _bounded(self, what: str, fn: Callable[[], object], timeout: float = WAIT) -> BaseException | None:
        """Run ``fn`` in a helper thread, waiting at most ``timeout``; returns its error."""
        box: list[BaseException | None] = []

        def call() -> None:
            try:
                fn()
                box.append(None)
            except BaseException as exc:
                box.append(exc)

        t = threading.Thread(target=call, name=f"stress-{what}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self._hang(what)
            return None
        return box[0]

    # -- one phase --

    def _phase(self, plan: PhasePlan) -> None:
        rep = self.report
        rep.phases += 1
        self.markers.mkdir(exist_ok=True)
        self.killed = set()
        self.terminated = False
        if self.verbose:
            rss = psutil.Process().memory_info().rss / 2**20
            print(f"[{time.monotonic() - self.start:6.1f}s rss {rss:.0f} MiB] {plan.describe()}", file=sys.stderr)
        pool = RobustPool(plan.workers, task_timeout=plan.timeout, retries=plan.retries, start_method=plan.start_method)
        rep.pools += 1
        jobs: list[Job] = []
        self._track(pool)
        ended = False
        try:
            self.abandoned = False
            for r in range(plan.rounds):
                last = r == plan.rounds - 1
                if self._done() and r:
                    break
                ended = self._round(pool, plan, jobs, terminate=plan.terminate and last)
                self._track(pool)
                if self.stuck or ended:
                    break
                idle_kill = self.rng.random() < self.profile.idle_kill and "idle_worker_kill" not in self.opts.exclude
                if idle_kill and not self.abandoned:
                    self._kill_idle_worker(pool)
        finally:
            if not ended:
                pool.close()
                t0 = time.monotonic()
                err = self._bounded("pool.join()", lambda: pool.join(WAIT), WAIT + 5)
                if time.monotonic() - t0 >= WAIT:
                    self._hang(f"{plan.describe()}: pool.join()")
                if err is not None:
                    rep.violation("runner", f"pool.join() raised {err!r}")
        # An abandoned iterator is closed (and cleans up) when it is collected.
        gc.collect()
        self._settle(plan, jobs)
        shutil.rmtree(self.markers, ignore_errors=True)
        if plan.sigint and not self._done():
            self._sigint_owner(plan)

    def _round(self, pool: RobustPool, plan: PhasePlan, jobs: list[Job], terminate: bool) -> bool:
        """One round; returns True when it terminated the pool."""
        p, rng = self.profile, self.rng

        def rate() -> float:
            return 0.0 if rng.random() < p.clean_jobs else p.fault_rate

        pending: list[tuple[Job, Any]] = []
        # map_async
        if rng.random() < 0.7:
            job, specs = self._new_job("map_async", plan, rng.randint(*p.map_items), rate())
            chunk = rng.choice([None, rng.randint(*p.chunks)])
            pending.append((job, pool.map_async(run, specs, chunk, cleanup=self.cleanup)))
            jobs.append(job)
        # a batch of apply_async
        if rng.random() < 0.7:
            job, specs = self._new_job("apply_async", plan, rng.randint(*p.apply_items), rate())
            pending.append((job, [pool.apply_async(run_star, (s, len(s.token))) for s in specs]))
            jobs.append(job)
        # a batch of submit
        if rng.random() < 0.7:
            job, specs = self._new_job("submit", plan, rng.randint(*p.apply_items), rate())
            pending.append((job, [pool.submit(run_star, s, extra=len(s.token)) for s in specs]))
            jobs.append(job)
        # chaos during the round
        sup_kill_at = rng.random() if plan.sup_kill else None
        term_at = rng.random() if terminate else None
        # imap in this thread
        if rng.random() < 0.85 or not pending:
            ordered = rng.random() < 0.5
            n = rng.randint(*p.imap_items)
            early = rng.random() < p.early and "early_break" not in self.opts.exclude
            stop = rng.randint(0, n - 1) if early else None
            api = "imap" if ordered else "imap_unordered"
            source: Iterator[Spec]
            if early and rng.random() < 0.4:
                self.jid += 1
                job = Job(api, self.jid, [], endless=True)
                source = self._endless(plan, job, rate())
            else:
                job, specs = self._new_job(api, plan, n, rate())
                source = iter(specs)
            jobs.append(job)
            terminated = self._consume(pool, plan, job, source, n, ordered, stop, sup_kill_at, term_at)
        else:
            if sup_kill_at is not None:
                time.sleep(sup_kill_at * 0.05)
                self._kill_supervisor(pool)
            terminated = term_at is not None
            if term_at is not None:
                time.sleep(term_at * 0.05)
                self._terminate(pool)
        for job, handle in pending:
            self._collect(job, handle)
        return terminated

    def _consume(
        self,
        pool: RobustPool,
        plan: PhasePlan,
        job: Job,
        source: Iterator[Spec],
        n: int,
        ordered: bool,
        stop: int | None,
        sup_kill_at: float | None,
        term_at: float | None,
    ) -> bool:
        """Consume an imap of ``n`` items (or of an endless input, broken off at ``stop``);
        returns True when it terminated the pool."""
        rng = self.rng
        chunk = rng.randint(*self.profile.chunks)
        method = pool.imap if ordered else pool.imap_unordered
        it = method(run, source, chunk, cleanup=self.cleanup, buffersize=self.profile.buffersize)
        size = "endless" if job.endless else str(n)
        kill_at = int(sup_kill_at * n) if sup_kill_at is not None else None
        term_pos = int(term_at * n) if term_at is not None else None
        how = rng.choice(["close", "close", "with", "del"])
        taken = 0
        while True:
            if kill_at is not None and taken >= kill_at:
                self._kill_supervisor(pool)
                kill_at = None
            if term_pos is not None and taken >= term_pos:
                job.early = True
                job.note = f", chunksize {chunk}, terminated after {taken} of {size}"
                self._terminate(pool)
                return True
            if stop is not None and taken >= stop:
                job.early = True
                job.note = f", chunksize {chunk}, closed by {how} after {taken} of {size}"
                self.report.events["early_break"] += 1
                if how == "del":
                    # Abandoned, not closed: the pool holds the iterator while its tasks
                    # run, and join() reads the rest of its input; garbage collection then
                    # closes it, cleaning what it holds. Workers may be busy after this.
                    self.abandoned = job.abandoned = True
                    del it
                    gc.collect()
                else:
                    with contextlib.suppress(StopIteration):
                        if how == "with":
                            with it:
                                pass
                        else:
                            err = self._bounded("imap close()", it.close, WAIT)
                            if err is not None:
                                self.report.violation("runner", f"job {job.jid}: close() raised {err!r}")
                return False
            expect = job.items[taken] if ordered and taken < len(job.items) else None
            try:
                value = it.next(timeout=WAIT)
            except StopIteration:
                break
            except multiprocessing.TimeoutError:
                self._hang(f"{plan.describe()}: job {job.jid} {job.api} next() after {taken} of {size}")
                it.close()
                return False
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                self._error(job, exc, expect)
            else:
                self._value(job, value, expect)
            taken += 1
        if taken != len(job.items):
            self.report.violation("lost", f"job {job.jid} {job.api}: the iterator ended after {taken} of {size} items")
        return False

    def _collect(self, job: Job, handle: Any) -> None:
        if job.api == "map_async":
            try:
                values = handle.get(timeout=WAIT)
            except multiprocessing.TimeoutError:
                self._hang(f"job {job.jid} map_async.get()")
                return
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                job.error = type(exc).__name__
                self.report.errors[job.error] += 1
                return
            if len(values) != len(job.items):
                self.report.violation("lost", f"job {job.jid} map_async: {len(values)} values for {len(job.items)} items")
            for item, value in zip(job.items, values, strict=False):
                self._value(job, value, item)
            return
        wait = WAIT
        for item, res in zip(job.items, handle, strict=True):
            try:
                value = res.get(timeout=wait) if job.api == "apply_async" else res.result(timeout=wait)
            except (multiprocessing.TimeoutError, concurrent.futures.TimeoutError):
                self._hang(f"job {job.jid} {job.api} {item.token}")
                wait = 1.0  # the rest of the job had as long already: report, do not wait WAIT again
                continue
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                self._error(job, exc, item)
            else:
                self._value(job, value, item)

    # -- chaos --

    @staticmethod
    def _workers_now(pool: RobustPool) -> set[int]:
        """Every worker of ``pool`` right now. ``worker_pids()`` lists a worker only once
        robustpool has processed its start, which can be after it ran tasks; the
        supervisor's children are asked as well."""
        pids = set(pool.worker_pids())
        pids.update(p.pid for p in descendants(pool.supervisor_pid))
        return pids

    def _kill_supervisor(self, pool: RobustPool) -> None:
        """SIGKILL the supervisor; its workers die with it (PR_SET_PDEATHSIG).

        It is stopped first, for the moment it takes to list its children: a worker it
        forks while they are listed could otherwise run a task, die unlisted, and leave
        a result file that looks like a leak."""
        self._track(pool)
        sup = pool.supervisor_pid
        try:
            os.kill(sup, signal.SIGSTOP)
            wait_stopped(sup)
            self.killed.update(self._workers_now(pool))
            os.kill(sup, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.report.events["supervisor_kill"] += 1

    def _kill_idle_worker(self, pool: RobustPool) -> None:
        """Every result of the round is in: the workers are idle. Kill one from outside."""
        pids = pool.worker_pids()
        if not pids:
            return
        self._track(pool)
        sig = self.rng.choice([signal.SIGKILL, signal.SIGTERM])
        victim = self.rng.choice(pids)
        if self.verbose:
            states = {pid: wchan(pid) for pid in pids}
            print(f"  idle kill {victim} with {signal.Signals(sig).name}; workers' wchan: {states}", file=sys.stderr)
        self.killed.add(victim)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, sig)
        self.report.events["idle_worker_kill"] += 1

    def _terminate(self, pool: RobustPool) -> None:
        self._track(pool)
        # Every worker alive from now until the end is killed, including ones the
        # supervisor is still forking (they already have tasks queued on their sockets).
        self.terminated = True
        self.report.events["terminate"] += 1
        err = self._bounded("pool.terminate()", pool.terminate, WAIT)
        if err is not None:
            self.report.violation("runner", f"terminate() raised {err!r}")

    # -- settling a phase --

    def _dead_workers(self) -> set[int]:
        """Pids of the workers of this phase known to have died with results unsent: the
        ones a fault killed (they said so before dying) and the ones the runner killed."""
        dead = set(self.killed)
        with contextlib.suppress(OSError):
            dead.update(int(name[6:]) for name in os.listdir(self.markers) if name.startswith("dying-"))
        return dead

    def _settle(self, plan: PhasePlan, jobs: list[Job]) -> None:
        """After the pool is gone: every item has exactly one outcome, no file is left.

        A result file that still exists is a result a worker computed that nobody received
        or cleaned. It is allowed (an *orphan*, removed here) only when the worker that
        wrote it (its pid is in the file's name) is known to have died -- a fault said so,
        the runner killed it, or the pool was terminated, which kills every worker left:
        a worker dies with
        the results it computed but had not sent yet, robustpool never had them, and runs
        those items again unless their iterator was closed in the meantime. Any other
        leftover is a lost result and stays on disk, to be counted among the temp files.
        """
        rep = self.report
        dead = self._dead_workers()
        files: dict[str, list[tuple[int, str]]] = {}  # token -> (writer pid, file name)
        for name in os.listdir(self.results):
            token, writer, _nonce = name.split("@")
            files.setdefault(token, []).append((int(writer), name))
        for job in jobs:
            failed_map = job.api == "map_async" and job.error is not None
            error_owners: list[Item] = []
            for item in job.items:
                live = []
                for pid, name in files.get(item.token, []):
                    if pid in dead or self.terminated:
                        # Its worker died before sending it: an orphan, not a leak.
                        rep.orphans += 1
                        (self.results / name).unlink()
                    else:
                        live.append(pid)
                exists = bool(live)
                handed = item.values + len(item.errors)
                outcomes = handed + item.cleaned
                where = f"{item.token} ({item.fault}, {job.api}{job.note}, {plan.describe()})"

                def lost(why: str, exists: bool = exists, where: str = where, live: list[int] = live) -> None:
                    rep.lost += 1
                    if exists:
                        rep.cleanups_owed += 1  # owed, never run: the file stays as evidence
                        why += f" (computed by worker {live}, not known to have died)"
                    rep.violation("lost", f"{where}: {why}")

                if outcomes > 1:
                    rep.duplicates += 1
                    counts = f"{item.values} value(s), errors {item.errors}, {item.cleaned} cleanup(s)"
                    rep.violation("duplicates", f"{where}: {counts}")
                if item.cleaned and not handed:
                    rep.cleanups_owed += 1
                if outcomes:
                    if exists:
                        # It has its outcome, but a result it computed reached nobody: the
                        # item ran more than once (or failed after computing), and that
                        # result was dropped without a cleanup.
                        rep.cleanups_owed += 1
                        got = f"{item.values} value(s), errors {item.errors}, {item.cleaned} cleanup(s)"
                        rep.violation(
                            "leaked_result",
                            f"{where}: ended with {got}, yet a result it computed in worker {live} (alive) "
                            "was never handed nor cleaned",
                        )
                elif failed_map:
                    if exists:
                        lost(f"computed in a map_async that raised {job.error}, never cleaned")
                        continue
                    error_owners.append(item)
                    if not item.allowed - {"ok"}:
                        rep.wrong_errors += 1
                        why = f"should succeed, failed inside a map_async that raised {job.error}"
                        rep.violation("wrong_errors", f"{where}: {why}")
                elif job.early and not exists:
                    rep.cancelled += 1  # never ran (or died with its worker): dropped at close
                elif job.early:
                    lost("computed after its iterator closed early, never cleaned")
                else:
                    lost("no outcome at all")
            if failed_map and error_owners and job.error not in set().union(*(it.allowed for it in error_owners)):
                rep.wrong_errors += 1
                rep.violation("wrong_errors", f"job {job.jid} map_async raised {job.error}; its failed items allow none of that")
            if failed_map and not error_owners:
                rep.wrong_errors += 1
                rep.violation("wrong_errors", f"job {job.jid} map_async raised {job.error} but every item was cleaned")
        with self.lock:
            for job in jobs:
                for item in job.items:
                    self.items.pop(item.token, None)

    # -- Ctrl-C to an owner subprocess --

    def _sigint_owner(self, plan: PhasePlan) -> None:
        rep, rng = self.report, self.rng
        rep.events["sigint_owner"] += 1
        child_dir = Path(tempfile.mkdtemp(prefix="owner-", dir=self.root))
        group = rng.random() < 0.5
        args = [sys.executable, "-m", "stress", "--owner-child", str(child_dir), "--seed", str(rng.randrange(2**31))]
        args += ["--workers", str(min(self.workers, 4)), "--start-method", rng.choice(["fork", "spawn"])]
        proc = subprocess.Popen(
            args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
        )
        what = f"Ctrl-C'd owner subprocess (phase {plan.index})"
        try:
            line = _read_line(proc, CHILD_WAIT)
            if not line.startswith("RUNNING"):
                rep.violation("runner", f"{what}: did not start: {line!r}")
                return
            children = descendants(proc.pid)
            for p in children:
                self.tracked.setdefault(p.pid, p)
            self.shm.adopt(p.pid for p in children)
            time.sleep(rng.uniform(0.0, 0.4))
            if group:  # what a terminal does: the whole foreground process group
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=CHILD_WAIT)
            except subprocess.TimeoutExpired:
                self._hang(what)
                # The child's own threads say where it is stuck (it dumps them on SIGUSR1).
                os.kill(proc.pid, signal.SIGUSR1)
                time.sleep(1.0)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _out, err = proc.communicate(timeout=CHILD_WAIT)
                print(f"--- {what}: its stderr ---\n{err.decode(errors='replace')[-20000:]}", file=sys.stderr)
                return
            summary = _last_json(out.decode(errors="replace"))
            if proc.returncode != 130 or summary is None:
                tail = err.decode(errors="replace")[-400:]
                rep.violation("runner", f"{what}: exit {proc.returncode}, expected 130 after KeyboardInterrupt; stderr: {tail}")
                return
            rep.submitted += summary["submitted"]
            rep.apis["imap(owner subprocess)"] += summary["submitted"]
            rep.delivered += summary["handed"]
            rep.cleanups_run += summary["cleaned"]
            rep.cleanups_owed += summary["cleaned"]
            # KeyboardInterrupt lands at an arbitrary bytecode of the consumer: at most one
            # value can be cut off between next() returning it and the bookkeeping.
            # close() then waited for every running task, so nothing else may be left.
            left = summary["files_left"]
            rep.orphans += summary["orphans"] + min(left, 1)
            if left > 1:
                rep.lost += left - 1
                rep.cleanups_owed += left - 1
                rep.violation("lost", f"{what}: {left} results computed, neither handed nor cleaned")
            rep.errors.update(summary["errors"])
            rep.faults.update(summary["faults"])
            for problem in summary["problems"]:
                rep.violation("lost", f"{what}: {problem}")
                rep.lost += 1
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            shutil.rmtree(child_dir, ignore_errors=True)

    # -- the end --

    def _final_checks(self, fds_before: int, shm_before: dict[str, ShmStat]) -> None:
        rep = self.report
        gc.collect()
        deadline = time.monotonic() + SETTLE
        while True:
            living = alive(list(self.tracked.values()) + descendants(os.getpid()))
            if not living or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        rep.leaked_processes = len(living)
        for p in living:
            with contextlib.suppress(psutil.Error):
                rep.violation("leaked_processes", f"pid {p.pid} {' '.join(p.cmdline())[:100]} (status {p.status()})")
                p.kill()
        gc.collect()
        self.shm.stop()  # every process of ours is gone now; the owner is sampled once more
        rep.shm_ticks, rep.shm_samples, rep.shm_triggered = self.shm.ticks, self.shm.samples, self.shm.triggered
        rep.shm_cpu, rep.shm_slowest, rep.shm_inotify = self.shm.cpu, self.shm.slowest, self.shm.inotify
        rep.fd_before, rep.fd_after, rep.fd_allowance = fds_before, fd_count(), FD_ALLOWANCE
        if rep.fd_growth > FD_ALLOWANCE:
            rep.violation("fds", f"{rep.fd_growth} more descriptors: {fd_targets()[-10:]}")
        shutil.rmtree(self.markers, ignore_errors=True)
        left = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if not p.is_dir())
        rep.temp_files_left = len(left)
        if left:
            rep.violation("temp_files", f"{len(left)} left in {self.root}: {left[:10]}")
        # Only what our own processes created counts, not what other programs on the
        # machine made meanwhile (see ShmSampler).
        after = shm_snapshot()
        ours = shm_leaks(shm_before, after, self.shm.held)
        rep.shm_left = len(ours)
        if ours:
            who = []
            for name in ours[:10]:
                holder = self.shm.held.get(after[name].key)
                who.append(f"{name} (held by pid {holder[0]} as {holder[1]})" if holder else f"{name} (robustpool's name)")
            rep.violation("shm", f"/dev/shm entries our processes created and left: {who}")
        shutil.rmtree(self.root, ignore_errors=True)


# --- helpers ------------------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line the child prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                return f"<no line within {timeout:.0f} s; got {buf!r}>"
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return f"<exited first: {buf!r}>"
            buf += chunk
    finally:
        sel.close()
    return buf.decode(errors="replace")


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                data: dict[str, Any] = json.loads(line)
                return data
    return None


# --- the owner subprocess (Ctrl-C target) -------------------------------------------------


def owner_child(directory: str, seed: int, workers: int, start_method: str) -> int:
    """Run an endless imap until Ctrl-C; then report, as JSON, what was handed and cleaned.

    Exit code 130 after a KeyboardInterrupt (as a shell reports Ctrl-C), 1 otherwise. The
    result files of the items: handed ones are removed by the consumer, cleaned ones by the
    cleanup; what is left was computed by a worker killed before it could send it.
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the runner asks for this at a hang
    rng = random.Random(seed)
    results = Path(directory) / "results"
    markers = Path(directory) / "markers"
    results.mkdir()
    markers.mkdir()
    handed: set[str] = set()
    cleaned: list[str] = []
    errors: dict[str, int] = {}
    problems: list[str] = []
    faults: dict[str, int] = {}
    submitted = 0

    def clean(value: Outcome) -> None:
        cleaned.append(value.token)
        if value.token in handed:
            problems.append(f"{value.token} was handed and cleaned")
        try:
            os.unlink(value.path)
        except FileNotFoundError:
            problems.append(f"{value.token} cleaned twice")

    def specs() -> Iterator[Spec]:
        nonlocal submitted
        i = 0
        while True:
            fault = rng.choice([Fault.NONE] * 12 + [Fault.EXCEPTION, Fault.SIGKILL])
            faults[fault.value] = faults.get(fault.value, 0) + 1
            submitted += 1
            yield Spec(f"c{seed}i{i}", fault.value, False, str(results), str(markers), os.getpid(), rng.uniform(0, 0.02))
            i += 1

    interrupted = False
    try:
        with RobustPool(workers, start_method=start_method) as pool:
            it = pool.imap(run, specs(), rng.randint(1, 3), cleanup=clean)
            with it:
                first = True
                while True:
                    try:
                        value = it.next(timeout=WAIT)
                    except (StopIteration, multiprocessing.TimeoutError):
                        problems.append("the endless imap ended or timed out")
                        break
                    except Exception as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    else:
                        handed.add(value.token)
                        os.unlink(value.path)
                    if first:
                        first = False
                        print("RUNNING", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    if len(cleaned) != len(set(cleaned)):
        problems.append("some result was cleaned twice")
    # A file written by a worker that then died (a SIGKILL item said so) is an orphan; any
    # other file is a result that was computed and neither handed nor cleaned.
    dying = {int(n[6:]) for n in os.listdir(markers) if n.startswith("dying-")}
    orphans = left = 0
    for name in os.listdir(results):
        if int(name.split("@")[1]) in dying:
            orphans += 1
        else:
            left += 1
    summary = {
        "submitted": submitted,
        "handed": len(handed),
        "cleaned": len(cleaned),
        "files_left": left,
        "orphans": orphans,
        "errors": errors,
        "faults": faults,
        "problems": problems,
    }
    print(json.dumps(summary), flush=True)
    return 130 if interrupted else 1
