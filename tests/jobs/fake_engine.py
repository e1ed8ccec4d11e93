"""An in-memory Engine that runs nothing by itself: the test plays the engine's thread.

It keeps the rules of the seam (``robustpool._engine``) that jobs rely on and records what a
facade or a job asked of it: every chunk submitted (and in how many ``submit`` calls), the
holds, the cancels, close, terminate and join. The test then does what an engine's thread
would: ``start`` a chunk (its job claims it, or the chunk is dropped), ``run`` it (the
function applied to each item, consecutive successes reported in one ``deliver``), or report
any outcome by hand in a ``Burst``, which flushes every job it touched once, at its end.
Any of these may be called from another thread (see ``in_thread``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from robustpool._calls import Mode, function_name
from robustpool._engine import Capability, Chunk, Engine, FuncRef, Job
from robustpool._errors import PoolTerminatedError
from robustpool._stats import PoolStats

T = TypeVar("T")


class FakeHold:
    """A Hold that counts its releases (the protocol allows more than one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0

    def release(self) -> None:
        with self._lock:
            self.calls += 1

    @property
    def released(self) -> bool:
        return self.calls > 0


class Burst:
    """Outcomes reported together: leaving the ``with`` block flushes every job touched, once."""

    def __init__(self) -> None:
        self.touched: list[Job] = []

    def _touch(self, job: Job) -> Job:
        if not any(j is job for j in self.touched):
            self.touched.append(job)
        return job

    def claim(self, job: Job) -> bool:
        return self._touch(job).claim()

    def deliver(self, job: Job, index: int, values: Sequence[Any]) -> None:
        self._touch(job).deliver(index, values)

    def fail(self, job: Job, index: int, exc: BaseException) -> None:
        self._touch(job).fail(index, exc)

    def drop(self, job: Job, index: int, count: int) -> None:
        self._touch(job).drop(index, count)

    def flush(self) -> None:
        jobs, self.touched = self.touched, []
        for job in jobs:
            job.flush()

    def __enter__(self) -> Burst:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()


def apply(chunk: Chunk, k: int) -> Any:
    """Item ``k`` of ``chunk`` applied to its function, as a worker would."""
    fn, item = chunk.func.fn, chunk.items[k]
    if chunk.mode == Mode.MAP:
        return fn(item)
    if chunk.mode == Mode.STAR:
        return fn(*item)
    args, kwds = item
    return fn(*args, **kwds)


class FakeEngine:
    """See the module docstring. ``held_per_item``: the bytes ``submit`` reports per item;
    ``batch``: what ``batch_size`` answers; ``drain_on_join``: ``join`` after ``close`` runs
    every pending chunk first (an engine finishing its work)."""

    def __init__(self, capacity: int = 2, batch: int = 1, held_per_item: int = 0, drain_on_join: bool = False) -> None:
        self.capacity = capacity
        self.capabilities = Capability.NONE
        self.broken: BaseException | None = None
        self.batch = batch
        self.held_per_item = held_per_item
        self.drain_on_join = drain_on_join
        self._lock = threading.Lock()
        self.chunks: list[Chunk] = []  # every chunk submitted, in order
        self.submits: list[int] = []  # chunks per submit() call
        self.pending: list[Chunk] = []  # submitted, not started
        self.running: list[Chunk] = []  # claimed, outcomes not all reported
        self.cancels: list[Job] = []
        self.kills: list[Job] = []
        self.holds: list[FakeHold] = []
        self.batch_calls: list[tuple[FuncRef, int]] = []
        self.closed = 0
        self.terminated = 0
        self.joins: list[float | None] = []
        self.on_terminate: Callable[[FakeEngine], None] | None = None  # runs first in terminate()

    # -- the Engine protocol --

    @property
    def finished(self) -> bool:
        with self._lock:
            if self.terminated:
                return True
            return bool(self.closed) and not self.pending and not self.running and all(h.released for h in self.holds)

    def function(self, fn: Callable[..., Any]) -> FuncRef:
        return FuncRef(FuncRef.new_id(), function_name(fn), fn)

    def submit(self, chunks: Sequence[Chunk]) -> int:
        chunks = list(chunks)  # the caller may reuse its list
        with self._lock:
            self.chunks += chunks
            self.pending += chunks
            self.submits.append(len(chunks))
        return self.held_per_item * sum(len(c.items) for c in chunks)

    def cancel(self, job: Job) -> None:
        """Drops the job's chunks that have not started, in one burst."""
        with self._lock:
            self.cancels.append(job)
            dropped = [c for c in self.pending if c.job is job]
            self.pending = [c for c in self.pending if c.job is not job]
        with Burst() as burst:
            for c in dropped:
                burst.drop(job, c.start, len(c.items))

    def cancel_all(self) -> None:
        """Drops every pending chunk, in one burst."""
        with self._lock:
            dropped = [c for c in self.pending if c.job.cancellable]
            self.pending = [c for c in self.pending if not c.job.cancellable]
        with Burst() as burst:
            for c in dropped:
                burst.drop(c.job, c.start, len(c.items))

    def kill(self, job: Job) -> None:
        """Drops the job's pending chunks (as cancel) and forgets its running ones: their
        outcomes are never reported (a killed worker sends nothing)."""
        with self._lock:
            self.kills.append(job)
            self.running = [c for c in self.running if c.job is not job]
        self.cancel(job)

    def batch_size(self, func: FuncRef, ahead: int) -> int:
        with self._lock:
            self.batch_calls.append((func, ahead))
        return self.batch

    def hold(self) -> FakeHold:
        h = FakeHold()
        with self._lock:
            self.holds.append(h)
        return h

    def close(self) -> None:
        with self._lock:
            self.closed += 1

    def terminate(self) -> None:
        """Runs ``on_terminate`` (results read while stopping), then fails every outstanding
        item with PoolTerminatedError."""
        with self._lock:
            self.terminated += 1
        if self.on_terminate is not None:
            self.on_terminate(self)
        with self._lock:
            outstanding, self.pending, self.running = self.pending + self.running, [], []
        with Burst() as burst:
            for c in outstanding:
                for k in range(len(c.items)):
                    burst.fail(c.job, c.start + k, PoolTerminatedError())

    def join(self, timeout: float | None = None) -> bool:
        with self._lock:
            self.joins.append(timeout)
            drain = self.drain_on_join and bool(self.closed)
        if drain:
            self.run_all()
        return self.finished

    def stats(self) -> PoolStats:
        return PoolStats(0, 0, 0, 0, 0, 0, (), ())

    def pids(self) -> list[int]:
        return []

    # -- the engine's thread, played by the test --

    @property
    def submitted_items(self) -> int:
        with self._lock:
            return sum(len(c.items) for c in self.chunks)

    def start(self, chunk: Chunk | None = None, burst: Burst | None = None) -> bool:
        """The job claims ``chunk`` (the oldest pending one by default): True, it is running;
        False, it is dropped."""
        with self._lock:
            chunk = self.pending[0] if chunk is None else chunk
            self.pending.remove(chunk)
        own = burst is None
        burst = Burst() if burst is None else burst
        try:
            if burst.claim(chunk.job):
                with self._lock:
                    self.running.append(chunk)
                return True
            burst.drop(chunk.job, chunk.start, len(chunk.items))
            return False
        finally:
            if own:
                burst.flush()

    def run(self, chunk: Chunk | None = None, burst: Burst | None = None) -> bool:
        """Start ``chunk`` (unless it is running already) and report every item's outcome;
        flushes unless ``burst`` is given (the caller's burst then flushes). False if the job
        did not claim it."""
        own = burst is None
        burst = Burst() if burst is None else burst
        try:
            with self._lock:
                chunk = self.pending[0] if chunk is None else chunk
                started = any(c is chunk for c in self.running)
            if not started and not self.start(chunk, burst):
                return False
            with self._lock:
                self.running.remove(chunk)
            ok: list[Any] = []
            first = chunk.start
            for k in range(len(chunk.items)):
                try:
                    value = apply(chunk, k)
                except Exception as exc:
                    if ok:
                        burst.deliver(chunk.job, first, ok)
                    burst.fail(chunk.job, chunk.start + k, exc)
                    ok, first = [], chunk.start + k + 1
                else:
                    ok.append(value)
            if ok:
                burst.deliver(chunk.job, first, ok)
            return True
        finally:
            if own:
                burst.flush()

    def run_all(self) -> int:
        """Run every pending chunk, oldest first, in one burst; returns how many ran."""
        ran = 0
        with Burst() as burst:
            while True:
                with self._lock:
                    if not self.pending:
                        return ran
                    chunk = self.pending[0]
                ran += self.run(chunk, burst)

    def burst(self) -> Burst:
        return Burst()


def as_engine(engine: FakeEngine) -> Engine:
    """The fake, typed as the protocol: mypy checks here that it conforms."""
    return engine


def in_thread(fn: Callable[[], T]) -> Future[T]:
    """Call ``fn`` on a new daemon thread; its outcome in a Future."""
    future: Future[T] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="fake-engine-test").start()
    return future


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` every millisecond for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


def waiters(cond: threading.Condition) -> int:
    """Threads waiting on ``cond`` right now (CPython's Condition keeps them in ``_waiters``)."""
    return len(vars(cond)["_waiters"])
