"""One chaos run: which pools it covers, the plan's counter, and the checks at its end.

``ChaosRun.start()`` puts a :class:`~._engine.ChaosEngine` in front of the engine of every
covered process pool (those alive, and those created while the run is on, unless the run
was given its pools) and starts the ``/dev/shm`` sampler; ``finish()`` takes the engines
away again, waits (bounded) for what is on its way out, and checks the invariants. The run
is owned by the thread that started it; the counters the pools' threads touch are guarded by
``_lock``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from .. import _core
from .._engine import Capability
from ._engine import DROPPED, ERROR, VALUE, ChaosEngine, Ledger
from ._faults import PHASES, Plan
from ._leaks import FD_ALLOWANCE, ShmSampler, fd_count, fd_targets, shm_leaks, shm_snapshot
from ._plan import Rates, idle_kill_at, plan_item

if TYPE_CHECKING:
    from .._core import PoolCore

SETTLE = 10.0  # seconds: how long processes on their way out may take at the end
_active: ChaosRun | None = None
_active_lock = threading.Lock()


class ChaosInvariantError(AssertionError):
    """A chaos run found a broken invariant: a result lost or cleaned twice, a process, a
    descriptor or a ``/dev/shm`` entry left behind. The message lists them with the seed."""


@dataclass
class ChaosReport:
    """What a chaos run did and found (filled in as the run goes; final once it ended).

    :ivar seed: the run's seed: the same seed over the same program plans the same faults.
    :ivar items: items that reached a covered pool during the run.
    :ivar planned: faults planned, by kind (``kill``, ``segfault``, ``exit``, ``delay``,
        ``hang``); an item cancelled before it started never gets its fault.
    :ivar injected: faults that fired in a worker, by kind, and ``idle_kill`` (workers
        killed between tasks); a fault fires on an item's first attempt only.
    :ivar injected_by_phase: deaths that fired, by ``"kind/phase"`` (``"kill/during"``).
    :ivar outcomes: items by outcome: ``value``, ``error``, ``dropped`` (cancelled).
    :ivar pending: items still without an outcome at the end, in pools still running.
    :ivar handed_over: results of ``imap`` calls with a cleanup handed to the consumer.
    :ivar cleaned: results passed to such a cleanup.
    :ivar violations: the broken invariants; empty for a good run.
    :ivar replay: how to run the same plan again.
    """

    seed: int
    items: int = 0
    planned: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    injected_by_phase: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    handed_over: int = 0
    cleaned: int = 0
    violations: list[str] = field(default_factory=list)
    replay: str = ""

    @property
    def ok(self) -> bool:
        """True when no invariant was broken."""
        return not self.violations

    def summary(self) -> str:
        """A few lines for a person: what was injected, what came out, what broke."""

        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

        lines = [
            f"robustpool chaos, seed {self.seed}: {self.items} items",
            f"  injected: {counts(self.injected)}",
            f"  outcomes: {counts(self.outcomes)}" + (f", pending {self.pending}" if self.pending else ""),
            f"  imap results: {self.handed_over} handed over, {self.cleaned} cleaned",
        ]
        if self.violations:
            lines.append(f"  {len(self.violations)} broken invariant(s):")
            lines += [f"    - {v}" for v in self.violations]
        else:
            lines.append("  invariants: every item one outcome, every result handed over or cleaned once, nothing left")
        if self.replay:
            lines.append(f"  replay: {self.replay}")
        return "\n".join(lines)

    def check(self) -> None:
        """Raise ChaosInvariantError (an AssertionError) if an invariant was broken."""
        if self.violations:
            raise ChaosInvariantError(self.summary())


class ChaosRun:
    """The live state of one run (see the module's docstring)."""

    def __init__(self, seed: int, rates: Rates, pools: Sequence[Any] | None, replay: str, leaks: bool = True) -> None:
        self.seed = seed
        self.leaks = leaks  # check processes, descriptors and /dev/shm at the end (stress does its own)
        self.rates = rates
        self.report = ChaosReport(seed, replay=replay)
        self.active = False
        self.ledgers: list[Ledger] = []
        self.markers = ""
        self._pools = None if pools is None else [_core_of(p) for p in pools]
        self._lock = threading.RLock()  # reentrant: see ChaosEngine._lock
        self._serials = 0  # items planned so far: the next item's serial number
        self._chunks = 0  # chunks seen so far (the idle-kill plan's serial numbers)
        self._planned: Counter[str] = Counter()
        self._idle_kills = 0
        self._engines: list[tuple[PoolCore, ChaosEngine, bool]] = []  # (core, engine, created during the run)
        self._supervisors: set[int] = set()
        self._sampler = ShmSampler(os.getpid())
        self._fds_before = 0
        self._shm_before: dict[str, Any] = {}

    # -- start and end --

    def start(self) -> None:
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("a robustpool chaos run is already on in this process; runs do not nest")
            _active = self
        self.markers = tempfile.mkdtemp(prefix="robustpool-chaos-")
        gc.collect()
        self._fds_before = fd_count()
        self._shm_before = shm_snapshot()
        if self.leaks:
            self._sampler.start(self._shm_before)
        self.active = True
        if self._pools is None:
            for core in list(_core.live_cores):
                self._cover(core, created=False)
            _core.on_new_core = self._on_new_core
        else:
            for core in self._pools:
                self._cover(core, created=False)

    def _on_new_core(self, core: PoolCore) -> None:
        self._cover(core, created=True)

    def _cover(self, core: PoolCore, created: bool) -> None:
        engine = core.engine
        if isinstance(engine, ChaosEngine) or not engine.capabilities & Capability.PIDS:
            # Already covered; or threads (a fault would kill the owner itself); or Dask, whose
            # workers are not this machine's processes (not covered yet).
            return
        chaos = ChaosEngine(engine, self)
        core.engine = chaos
        with self._lock:
            self._engines.append((core, chaos, created))
        self._adopt(chaos)

    def _adopt(self, engine: ChaosEngine) -> None:
        """Count this pool's supervisor (and so its workers) among our processes."""
        with contextlib.suppress(Exception):
            pid = engine.supervisor_pid
            if pid and pid not in self._supervisors and self.leaks:
                self._supervisors.add(pid)
                self._sampler.adopt([pid])

    def finish(self) -> ChaosReport:
        global _active
        self.active = False
        if _core.on_new_core == self._on_new_core:
            _core.on_new_core = None
        with self._lock:
            engines = list(self._engines)
        for core, chaos, _ in engines:
            if core.engine is chaos:
                core.engine = chaos.inner  # calls from now on go straight to the pool's engine
        try:
            self._check(engines)
        finally:
            shutil.rmtree(self.markers, ignore_errors=True)
            self.ledgers = []
            with _active_lock:
                _active = None
        return self.report

    # -- used from the pools' threads --

    def plan(self, count: int, timeout: float) -> list[Plan | None]:
        with self._lock:
            first = self._serials
            self._serials += count
            self.report.items += count
        plans = [plan_item(self.seed, first + k, self.rates, timeout) for k in range(count)]
        with self._lock:
            for p in plans:
                if p is not None:
                    self._planned[p.kind] += 1
        return plans

    def idle_kill_now(self) -> bool:
        with self._lock:
            serial = self._chunks
            self._chunks += 1
        return idle_kill_at(self.seed, serial, self.rates)

    def record_idle_kill(self, pid: int) -> None:
        with self._lock:
            self._idle_kills += 1

    # -- the checks --

    def _check(self, engines: list[tuple[PoolCore, ChaosEngine, bool]]) -> None:
        rep = self.report
        gc.collect()  # an iterator dropped in a reference cycle is closed now (its cleanup runs)
        for _, chaos, _ in engines:
            self._adopt(chaos)  # a supervisor restarted during the run
        outcomes: Counter[str] = Counter()
        for ledger in self.ledgers:
            self._check_ledger(ledger, outcomes)
        rep.outcomes = {k: outcomes[k] for k in (VALUE, ERROR, DROPPED) if outcomes[k]}
        rep.planned = dict(self._planned)
        self._count_injected()
        if self.leaks:
            self._check_leaks(engines)

    def _check_leaks(self, engines: list[tuple[PoolCore, ChaosEngine, bool]]) -> None:
        rep = self.report
        running = [chaos for core, chaos, _ in engines if not chaos.inner.finished]
        self._check_processes(running)
        self._sampler.stop()
        created_running = any(created and not chaos.inner.finished for _, chaos, created in engines)
        if not created_running:
            # Only when every pool made during the run is gone: a live one holds sockets.
            growth = fd_count() - self._fds_before
            if growth > FD_ALLOWANCE:
                rep.violations.append(f"{growth} more file descriptors in the owner than before the run: {fd_targets()[-8:]}")
        after = shm_snapshot()
        for name in shm_leaks(self._shm_before, after, self._sampler.held):
            holder = self._sampler.held.get(after[name].key)
            who = f" (held by pid {holder[0]} as {holder[1]})" if holder else ""
            rep.violations.append(f"/dev/shm/{name} was created by our processes during the run and left behind{who}")

    def _check_ledger(self, ledger: Ledger, outcomes: Counter[str]) -> None:
        rep = self.report
        name = ledger.kind
        with ledger.lock:
            for what in ledger.outcomes.values():
                outcomes[what] += 1
            twice = list(ledger.twice)
            wrong = list(ledger.wrong)
            owed = [v for v, n in ledger.owed.values() for _ in range(n)]
        rep.handed_over += ledger.handed
        rep.cleaned += ledger.cleaned
        missing = ledger.missing()
        if missing:
            if ledger.engine.inner.finished:
                rep.violations.append(f"{name}: {len(missing)} item(s) never got an outcome (lost): positions {missing[:10]}")
            else:
                rep.pending += len(missing)
        rep.violations += [f"{name}: reported twice: {t}" for t in twice[:10]]
        rep.violations += [f"{name}: {w}" for w in wrong[:10]]
        job = ledger.job
        if ledger.counts_results and owed:
            ended = getattr(job, "closed", False) or _consumed(job)
            if ended:
                shown = ", ".join(f"{v!r:.60}" for v in owed[:5])
                rep.violations.append(
                    f"{name}: {len(owed)} result(s) were neither handed over nor cleaned after the iterator closed: {shown}"
                )

    def _count_injected(self) -> None:
        rep = self.report
        kinds: Counter[str] = Counter()
        phases: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.markers):
                _, kind, phase = entry.split("-", 2)
                kinds[kind] += 1
                if kind in ("kill", "segfault", "exit"):
                    phases[f"{kind}/{phase}"] += 1
        if self._idle_kills:
            kinds["idle_kill"] += self._idle_kills
        rep.injected = dict(kinds)
        rep.injected_by_phase = dict(phases)

    def _check_processes(self, running: list[ChaosEngine]) -> None:
        """Every process of a pool that has ended must be gone (a worker, a supervisor, a
        subprocess a task started): wait for them (bounded), then report and kill the rest."""
        deadline = time.monotonic() + SETTLE
        while True:
            keep: set[int] = set()
            for chaos in running:
                with contextlib.suppress(Exception):
                    sup = chaos.supervisor_pid
                    keep.add(sup)
                    keep.update(p.pid for p in psutil.Process(sup).children(recursive=True))
            left = self._sampler.leftovers(exclude=keep)
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                what = " ".join(proc.cmdline())[:100] or proc.name()
                self.report.violations.append(f"process {pid} ({what}) of an ended pool is still alive; killed")
                proc.kill()


def new_run(
    seed: int, replay: str, pools: Sequence[Any] | None = None, phases: Sequence[str] = PHASES, **rates: float
) -> ChaosRun:
    """A run from ``chaos()``'s arguments (``rates``: its rate and timing keywords), checked:
    the one place the context manager and the pytest plugin turn arguments into a run."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"chaos: seed must be an int, got {type(seed).__name__}")
    return ChaosRun(seed, Rates(phases=tuple(phases), **rates), pools, replay)


def _consumed(job: Any) -> bool:
    length, yielded = getattr(job, "_length", None), getattr(job, "_yielded", 0)
    return length is not None and yielded >= length


def _core_of(pool: Any) -> PoolCore:
    core = getattr(pool, "_core", None)
    if not isinstance(core, _core.PoolCore):
        raise TypeError(f"chaos(pools=...) takes robustpool pools and executors, not {type(pool).__name__}")
    return core
