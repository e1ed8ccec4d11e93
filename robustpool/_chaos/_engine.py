"""ChaosEngine: an engine in front of a pool's process engine that plans faults and keeps books.

While a chaos run is active, the facade's calls reach the real engine through this one:

* ``function(fn)`` hands the real engine a :class:`~._faults.ChaosCall` of ``fn`` instead;
* ``submit(chunks)`` packs each item with its plan (:class:`~._faults.Packed`) and gives the
  real engine a :class:`ProxyJob` in front of each job, which records every outcome (value,
  error, drop) before passing it on, in the job's :class:`Ledger`;
* a stream job's cleanup is counted, and so is each value handed to its consumer, so the
  run can tell that every result was handed over or cleaned, exactly once.

After the run the engine stays in front of jobs started during it (their tasks point at the
proxies, and ``cancel``/``kill`` must find them) but plans nothing more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._calls import Mode, function_name
from .._engine import Capability, Chunk, Engine, FuncRef, Hold, Job
from .._jobs._stream import StreamJob
from .._stats import PoolStats
from ._faults import ChaosCall, Packed, Plan

if TYPE_CHECKING:
    from ._session import ChaosRun

VALUE, ERROR, DROPPED = "value", "error", "dropped"


class Ledger:
    """What became of each item of one job under chaos. Written on the engine's thread
    (outcomes), the submitter's (submissions) and the consumer's (handed, cleaned): every
    field is guarded by ``lock``."""

    def __init__(self, job: Job, engine: ChaosEngine) -> None:
        self.lock = threading.RLock()  # reentrant: see ChaosEngine._lock
        self.job = job
        self.engine = engine
        self.kind = type(job).__name__
        self.submitted: set[int] = set()
        self.outcomes: dict[int, str] = {}
        self.twice: list[str] = []  # items reported more than once
        # Cleanup accounting (a stream job with a cleanup): values delivered and not yet
        # handed over or cleaned, by identity, each with the object (kept alive so its id
        # stays its own) and how many times it is owed.
        self.counts_results = False
        self.owed: dict[int, list[Any]] = {}
        self.wrong: list[str] = []  # handed or cleaned more often than delivered
        self.cleaned = 0
        self.handed = 0

    def submit(self, index: int, count: int) -> None:
        with self.lock:
            self.submitted.update(range(index, index + count))

    def outcome(self, index: int, count: int, what: str, values: Sequence[Any] = ()) -> None:
        with self.lock:
            for k in range(index, index + count):
                before = self.outcomes.get(k)
                if before is not None:
                    self.twice.append(f"item {k}: {before}, then {what}")
                else:
                    self.outcomes[k] = what
            if self.counts_results:
                for v in values:
                    entry = self.owed.get(id(v))
                    if entry is None:
                        self.owed[id(v)] = [v, 1]
                    else:
                        entry[1] += 1

    def _settle(self, value: Any, how: str) -> None:
        with self.lock:
            entry = self.owed.get(id(value))
            if entry is None or entry[0] is not value:
                why = "never delivered, or already handed over or cleaned"
                self.wrong.append(f"{how} a result that was not owed ({why}): {value!r:.80}")
                return
            entry[1] -= 1
            if entry[1] == 0:
                del self.owed[id(value)]

    def handed_over(self, value: Any) -> None:
        self.handed += 1
        self._settle(value, "handed over")

    def count_cleanup(self, cleanup: Callable[[Any], object]) -> Callable[[Any], object]:
        def counted(value: Any) -> object:
            self.cleaned += 1
            self._settle(value, "cleaned")
            return cleanup(value)

        return counted

    def missing(self) -> list[int]:
        with self.lock:
            return sorted(self.submitted - self.outcomes.keys())


class ProxyJob:
    """The job the real engine sees: records each outcome in the ledger, then passes it on."""

    __slots__ = ("job", "ledger")

    def __init__(self, job: Job, ledger: Ledger) -> None:
        self.job = job
        self.ledger = ledger

    @property
    def cancellable(self) -> bool:
        return self.job.cancellable

    def claim(self) -> bool:
        return self.job.claim()

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        self.ledger.outcome(index, len(values), VALUE, values)
        self.job.deliver(index, values)

    def fail(self, index: int, exc: BaseException) -> None:
        self.ledger.outcome(index, 1, ERROR)
        self.job.fail(index, exc)

    def drop(self, index: int, count: int) -> None:
        self.ledger.outcome(index, count, DROPPED)
        self.job.drop(index, count)

    def flush(self) -> None:
        self.job.flush()


class ChaosEngine:
    """An Engine in front of ``inner`` (a process engine) for one chaos run."""

    def __init__(self, inner: Engine, run: ChaosRun) -> None:
        self.inner = inner
        self.run = run
        # Reentrant, as every lock here: a collection inside a guarded block may close an
        # iterator (its __del__), whose close comes back into this engine or its ledger.
        self._lock = threading.RLock()
        self._proxies: dict[Job, ProxyJob] = {}  # guarded by _lock
        # Handles of ChaosCall functions: added under _lock, read without it (one set lookup).
        self._wrapped: set[int] = set()

    # -- what chaos changes --

    def function(self, fn: Callable[..., Any]) -> FuncRef:
        if not self.run.active:
            return self.inner.function(fn)
        ref = self.inner.function(ChaosCall(fn, self.run.markers))
        with self._lock:
            self._wrapped.add(ref.func_id)
        return FuncRef(ref.func_id, function_name(fn), fn)

    def _proxy(self, job: Job, create: bool) -> Job:
        with self._lock:
            proxy = self._proxies.get(job)
        if proxy is not None or not create:
            return proxy if proxy is not None else job
        # Built outside the lock: an allocation may run the garbage collector, and a
        # collected iterator closes its job, which calls cancel(), which takes the lock.
        # (The stress suite found that deadlock.)
        ledger = Ledger(job, self)
        proxy = ProxyJob(job, ledger)
        with self._lock:
            known = self._proxies.setdefault(job, proxy)
        if known is not proxy:
            return known  # another thread made it meanwhile
        if isinstance(job, StreamJob) and job._cleanup is not None:
            # Before the first chunk reaches the engine, so before any result can arrive.
            ledger.counts_results = True
            job._cleanup = ledger.count_cleanup(job._cleanup)
            job.on_handed = ledger.handed_over
        self.run.ledgers.append(ledger)
        return proxy

    def submit(self, chunks: Sequence[Chunk]) -> int:
        run = self.run
        active = run.active
        out: list[Chunk] = []
        for c in chunks:
            if c.func.func_id not in self._wrapped:
                out.append(c)  # a call that started before the run: not ours
                continue
            job = self._proxy(c.job, create=active)
            if isinstance(job, ProxyJob):
                job.ledger.submit(c.start, len(c.items))
            plans: list[Plan | None] = run.plan(len(c.items), c.timeout) if active else [None] * len(c.items)
            mode = int(c.mode)
            packed = [Packed(p, mode, x) for p, x in zip(plans, c.items, strict=True)]
            out.append(Chunk(job, c.func, Mode.MAP, c.start, packed, c.timeout, c.indexed, c.stream, c.item_deadline))
            if active and run.idle_kill_now():
                kill = getattr(self.inner, "kill_idle_worker", None)
                if kill is not None:
                    kill(run.record_idle_kill)
        return self.inner.submit(out)

    def cancel(self, job: Job) -> None:
        self.inner.cancel(self._proxy(job, create=False))

    def kill(self, job: Job) -> None:
        self.inner.kill(self._proxy(job, create=False))

    # -- what it passes on as it is --

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    @property
    def capabilities(self) -> Capability:
        return self.inner.capabilities

    @property
    def broken(self) -> BaseException | None:
        return self.inner.broken

    @property
    def finished(self) -> bool:
        return self.inner.finished

    @property
    def supervisor_pid(self) -> int:
        pid: int = getattr(self.inner, "supervisor_pid")  # noqa: B009 - only process engines are wrapped
        return pid

    def cancel_all(self) -> None:
        self.inner.cancel_all()

    def batch_size(self, func: FuncRef, ahead: int) -> int:
        return self.inner.batch_size(func, ahead)

    def hold(self) -> Hold:
        return self.inner.hold()

    def close(self) -> None:
        self.inner.close()

    def terminate(self) -> None:
        self.inner.terminate()

    def join(self, timeout: float | None = None) -> bool:
        return self.inner.join(timeout)

    def stats(self) -> PoolStats:
        return self.inner.stats()

    def pids(self) -> list[int]:
        return self.inner.pids()
