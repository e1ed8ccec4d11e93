"""The seam between facades and engines: the only engine module a facade imports.

A *facade* (``RobustPool``, and the executor, thread pool and scopes to come) turns a user's
call into a *job* (the owner-side state of that call: its result, its buffer, its iterator)
and into *chunks* of the call's items, and hands the chunks to an *engine*, which runs them
and reports each item's outcome back to the job. Data flow::

    user --call--> facade --Chunk(job, func, items)--> Engine.submit  (caller's thread)
    engine's thread --claim / deliver / fail / drop, then flush once--> Job --wakes--> user

Rules both sides keep:

* An engine serializes (or not) by itself: facades hand it Python objects. It may run user
  code on the caller's thread to serialize, in ``function()`` and ``submit()``, never a
  callback or a cleanup; those run where the job calls them.
* An engine reports to jobs in bursts: after the calls of one burst it calls ``flush()`` once
  on every job it touched, on the same thread, so a job wakes its waiters once per burst.
* A facade refuses at the call what its engine cannot enforce (``capabilities``).
"""

from __future__ import annotations

import atexit
import enum
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._calls import Mode
from ._stats import PoolStats

if TYPE_CHECKING:
    from ._config import PoolConfig

_func_ids = itertools.count(1)


class Job(Protocol):
    """The owner-side state of one call, as an engine sees it."""

    @property
    def cancellable(self) -> bool:
        """False when every chunk will be wanted whatever happens (an engine may then queue
        more of them ahead on a worker)."""
        ...

    def claim(self) -> bool:
        """A chunk of this job is about to start: True to run it, False to drop it (the job
        was cancelled). A future moves to running here."""
        ...

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        """Consecutive items starting at ``index`` succeeded with ``values``.

        An engine reports each item once, with one exception: an engine that cannot stop
        running work (threads) fails its unreported items at ``terminate()`` and still
        reports them when they finish. The job then treats the values as late: nobody
        can receive them, so they go to its cleanup, if it has one."""
        ...

    def fail(self, index: int, exc: BaseException) -> None:
        """Item ``index`` failed with ``exc``."""
        ...

    def drop(self, index: int, count: int) -> None:
        """Items ``index .. index+count-1`` will never run (the job was cancelled)."""
        ...

    def flush(self) -> None:
        """The end of a burst of the calls above: wake whoever waits, once."""
        ...


class Hold(Protocol):
    """A job that still feeds an engine (a lazy ``imap``): ``close()`` finishes only once
    every hold is released."""

    def release(self) -> None:
        """No more input will come from this job. Idempotent, any thread."""
        ...


class ReleaseOnce:
    """A Hold whose ``release()`` calls ``release`` once, whichever thread comes first."""

    __slots__ = ("_lock", "_release")

    def __init__(self, release: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        with self._lock:
            release, self._release = self._release, None
        if release is not None:
            release()


_exit_lock = threading.Lock()
_at_exit: set[Callable[[], None]] = set()


def at_exit_once(fn: Callable[[], None]) -> None:
    """Run ``fn`` at interpreter exit, registered once per process however often asked
    (an engine asks each time one is built)."""
    with _exit_lock:
        if fn not in _at_exit:
            _at_exit.add(fn)
            atexit.register(fn)


class Capability(enum.Flag):
    """What an engine can enforce; a facade refuses the parameters that need the others."""

    NONE = 0
    KILL_ON_TIMEOUT = enum.auto()  # task_timeout: a running task is stopped
    MEMORY_LIMIT = enum.auto()  # memory_limit
    RECYCLE = enum.auto()  # maxtasksperchild
    PIDS = enum.auto()  # workers are processes with pids
    STOP_RUNNING = enum.auto()  # kill(): a cancelled call's running chunks are stopped
    DEATHS = enum.auto()  # a task can kill its worker (retries then run it again on a fresh one)


@dataclass(frozen=True, slots=True)
class FuncRef:
    """The function of a call, as an engine knows it: ``func_id`` is the engine's handle (the
    same for equal functions, so a worker loads one function once)."""

    func_id: int
    name: str
    fn: Callable[..., Any]

    @staticmethod
    def new_id() -> int:
        return next(_func_ids)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much, per call
class Chunk:
    """Consecutive items ``start .. start+len(items)-1`` of ``job``: the unit of work.

    ``indexed``: errors name a position (False for apply/submit). ``stream``: each item's
    outcome is reported as soon as it is known (items the pool batched, or a call whose
    unwanted results must be cleaned). ``item_deadline``: each item has the whole
    ``timeout`` (items the pool batched); otherwise it covers the chunk. ``timeout`` 0.0 is
    no limit.
    """

    job: Job
    func: FuncRef
    mode: Mode
    start: int
    items: Sequence[Any]
    timeout: float = 0.0
    indexed: bool = True
    stream: bool = False
    item_deadline: bool = False


class Engine(Protocol):
    """What runs the chunks. Thread-safe: facades call it from any user thread."""

    @property
    def capacity(self) -> int:
        """Workers: how many chunks run at once (default chunk sizes, windows)."""
        ...

    @property
    def capabilities(self) -> Capability: ...

    @property
    def broken(self) -> BaseException | None:
        """Why the engine can run nothing more (every new chunk fails with it), or None."""
        ...

    @property
    def finished(self) -> bool:
        """True once the engine has stopped (closed and drained, or terminated)."""
        ...

    def function(self, fn: Callable[..., Any]) -> FuncRef:
        """The handle of ``fn`` for chunks; may raise TaskSerializationError."""
        ...

    def submit(self, chunks: Sequence[Chunk]) -> int:
        """Run these chunks (in order, as far as the engine can). Items that cannot even be
        handed over fail on their job at once. Returns the bytes the engine holds for them
        (0 for an engine that keeps objects as they are), for facades that bound their
        read-ahead in bytes."""
        ...

    def cancel(self, job: Job) -> None:
        """Drop the job's chunks that have not started (each is reported with ``drop``)."""
        ...

    def cancel_all(self) -> None:
        """Drop every chunk that has not started, of every cancellable job (each reported
        with ``drop``), and return once they are dropped (bounded)."""
        ...

    def kill(self, job: Job) -> None:
        """Stop the job: drop its chunks that have not started, and stop those running
        (with STOP_RUNNING; without it they run to the end). Nothing more of it is
        delivered; other jobs' work is not disturbed."""
        ...

    def batch_size(self, func: FuncRef, ahead: int) -> int:
        """How many consecutive items of a chunksize-1 call to send as one chunk, for a
        window of ``ahead`` items (1 when the engine does not batch)."""
        ...

    def hold(self) -> Hold:
        """Register a job that will submit more chunks later (see Hold)."""
        ...

    def close(self) -> None:
        """Accept no new work; stop once every chunk submitted is done and no hold is left."""
        ...

    def terminate(self) -> None:
        """Stop now: fail every outstanding item with PoolTerminatedError."""
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait until finished; False if ``timeout`` passed first."""
        ...

    def stats(self) -> PoolStats: ...

    def pids(self) -> list[int]:
        """Worker pids (empty for an engine without processes)."""
        ...


class EngineSpec(Protocol):
    """Where a pool runs when its facade is given ``engine=`` (``robustpool.dask.DaskEngine``):
    it builds one engine per pool, from the pool's validated configuration. Without one, a
    facade runs its pool on this machine's processes (``ProcessEngine``)."""

    @property
    def capabilities(self) -> Capability:
        """What the engines it builds can enforce (a facade refuses the rest at the call)."""
        ...

    @property
    def label(self) -> str:
        """How errors name it, such as ``"the Dask engine"``."""
        ...

    def default_workers(self) -> int:
        """A pool's size when ``processes`` (``max_workers``) is None."""
        ...

    def default_buffersize(self, workers: int) -> int:
        """Chunks an ``imap`` keeps ahead when ``buffersize`` is None."""
        ...

    def start(self, config: PoolConfig) -> Engine:
        """The engine of one new pool."""
        ...
