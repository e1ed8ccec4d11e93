"""The conformance grid: every facade over every engine it runs on, one *cell* each.

A cell builds pools; the test modules never name a facade or an engine. See the docstring
of ``conftest.py`` in this package for how cells become test parameters, and how a new
facade or engine adds its own.
"""

from __future__ import annotations

import enum
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, cast

from robustpool import RobustExecutor, RobustPool, RobustThreadPool, RobustThreadPoolExecutor

GET = 30.0  # upper bound for any result that should arrive promptly

# What the tests call: the multiprocessing.Pool surface, which RobustPool and RobustThreadPool
# share (one base class). The executors are not Pools: their cells hand them out as one
# (``cast``), which is sound for what they share with RobustPool (``submit`` and ``with``);
# the POOL_API skip keeps the Pool-only tests off them.
Pool: TypeAlias = RobustPool | RobustThreadPool


class Feature(enum.Flag):
    """What a test may need from a cell beyond running tasks; a cell lists what it cannot do
    (``Cell.cannot``), and tests that need it are skipped there."""

    # multiprocessing.Pool's own methods: apply*, *map* (returning lists), imap*, close/join/terminate,
    # processes. Every facade has submit() (a concurrent.futures.Future) and ``with``.
    POOL_API = enum.auto()
    # concurrent.futures.Executor's own methods: map (a lazy iterator, timeout= from the call),
    # shutdown(wait, cancel_futures=), max_workers. The executor's behaviour tests live in
    # tests/executor; a test here that calls these declares it (and is cast to the executor).
    EXECUTOR_API = enum.auto()
    KILL = enum.auto()  # a running task can be stopped from outside: terminate() and task_timeout kill it
    RECYCLE = enum.auto()  # maxtasksperchild: a worker is replaced after that many tasks
    MEMORY_LIMIT = enum.auto()  # memory_limit: a worker over the limit is recycled or killed
    PICKLES = enum.auto()  # calls, results and exceptions are pickled (one that cannot be rebuilt becomes RemoteTaskError)
    PROCESSES = enum.auto()  # workers are local OS processes: pids, signals, os._exit (the ``process`` marker)


# Constructor options that only mean something on a cell that has the feature: a test that
# passes one must declare the feature (the factory refuses it otherwise), so the test is
# skipped, not failed, on a cell without it. The start method comes from the cell (see the
# ``each_start_method`` marker), never from a test.
OPTION_NEEDS: Mapping[str, Feature] = {
    "maxtasksperchild": Feature.RECYCLE,
    "task_timeout": Feature.KILL,
    "memory_limit": Feature.MEMORY_LIMIT,
    "retries": Feature.PROCESSES,  # retries re-run a task that killed its worker process
}


class PoolFactory(Protocol):
    """Builds a pool of the cell under test: RobustPool's constructor without ``context``
    and ``start_method`` (the cell picks how its workers start)."""

    def __call__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        memory_limit: int | str | None = None,
        buffersize: int | None = None,
        close_timeout: float | None = 10.0,
    ) -> Pool: ...


@dataclass(frozen=True)
class Cell:
    """One facade over one engine.

    ``build(*args, start_method=..., **kwargs)`` makes a pool from the arguments a test gave
    (RobustPool's, positional ``processes`` first) and one of ``start_methods`` (None: the
    engine's default); it translates them for its facade if it has to (``max_workers``,
    ``max_tasks_per_child``, ...). ``start_methods``: the ways the engine can start workers that
    change how functions reach them (fork copies the owner; spawn imports by reference in a
    fresh interpreter); tests marked ``each_start_method`` run once per entry, other tests
    once with the default; empty for an engine with a single way. ``cannot``: each feature
    the cell lacks, with the reason shown when a test that needs it is skipped.
    """

    facade: str
    engine: str
    build: Callable[..., Pool]
    start_methods: tuple[str, ...] = ()
    cannot: Mapping[Feature, str] = field(default_factory=dict)
    # How many engines break on their own when the initializer fails (each after three
    # attempts in a row): one on a machine; one per Dask worker on a cluster.
    engines: int = 1

    @property
    def id(self) -> str:
        return f"{self.facade}-{self.engine}"

    def lacking(self, needed: Feature) -> str | None:
        """Why this cell cannot run a test that needs ``needed``, or None if it can."""
        reasons = [f"{feature.name} ({why})" for feature, why in self.cannot.items() if feature & needed]
        return f"{self.id} cannot do {', '.join(reasons)}" if reasons else None


def _robust_pool_process(*args: Any, start_method: str | None = None, **kwargs: Any) -> RobustPool:
    return RobustPool(*args, start_method=start_method, **kwargs)


def _robust_executor_process(
    processes: int | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    maxtasksperchild: int | None = None,
    *,
    start_method: str | None = None,
    **kwargs: Any,
) -> Pool:
    """RobustPool's arguments in ProcessPoolExecutor's names; the rest (task_timeout,
    retries, memory_limit, buffersize, close_timeout) are spelled the same on both."""
    executor = RobustExecutor(
        max_workers=processes,
        initializer=initializer,
        initargs=initargs,
        max_tasks_per_child=maxtasksperchild,
        start_method=start_method,
        **kwargs,
    )
    return cast(Pool, executor)  # see ``Pool``: only submit() and ``with`` are used on it


def _robust_thread_pool(*args: Any, start_method: str | None = None, **kwargs: Any) -> Pool:
    if args[3:4] and args[3] is not None:  # maxtasksperchild by position: keyword-only here
        kwargs["maxtasksperchild"] = args[3]
    return RobustThreadPool(*args[:3], **kwargs)


def _robust_thread_executor(
    processes: int | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    *,
    start_method: str | None = None,
    **kwargs: Any,
) -> Pool:
    """RobustPool's arguments in ThreadPoolExecutor's names (buffersize, close_timeout are ours)."""
    executor = RobustThreadPoolExecutor(max_workers=processes, initializer=initializer, initargs=initargs, **kwargs)
    return cast(Pool, executor)  # as _robust_executor_process


_THREADS_CANNOT: Mapping[Feature, str] = {
    Feature.KILL: "a running thread cannot be stopped: terminate() and task_timeout cannot kill it",
    Feature.RECYCLE: "threads are not recycled (maxtasksperchild is refused)",
    Feature.MEMORY_LIMIT: "threads share one process's memory (memory_limit is refused)",
    Feature.PICKLES: "objects are shared, never pickled",
    Feature.PROCESSES: "workers are threads: no pids, no signals, no os._exit",
}

CELLS: tuple[Cell, ...] = (
    Cell(
        "RobustPool",
        "process",
        _robust_pool_process,
        start_methods=("fork", "spawn"),
        cannot={Feature.EXECUTOR_API: "a multiprocessing.Pool has no shutdown(); its map returns a list"},
    ),
    Cell(
        "RobustExecutor",
        "process",
        _robust_executor_process,
        start_methods=("fork", "spawn"),
        cannot={Feature.POOL_API: "a concurrent.futures executor has no apply/imap/close/join"},
    ),
    Cell(
        "RobustThreadPool",
        "thread",
        _robust_thread_pool,
        cannot={**_THREADS_CANNOT, Feature.EXECUTOR_API: "a multiprocessing.Pool has no shutdown(); its map returns a list"},
    ),
    Cell(
        "RobustThreadPoolExecutor",
        "thread",
        _robust_thread_executor,
        cannot={**_THREADS_CANNOT, Feature.POOL_API: "a concurrent.futures executor has no apply/imap/close/join"},
    ),
)


def _dask_engine() -> Any:
    from on_dask.cluster import shared_client  # the session's LocalCluster, started on first use

    from robustpool.dask import DaskEngine

    return DaskEngine(shared_client())


def _robust_pool_dask(*args: Any, start_method: str | None = None, **kwargs: Any) -> RobustPool:
    return RobustPool(*args, engine=_dask_engine(), **kwargs)


def _robust_executor_dask(*args: Any, start_method: str | None = None, **kwargs: Any) -> Pool:
    return _robust_executor_process(*args, engine=_dask_engine(), **kwargs)


_DASK_CANNOT: Mapping[Feature, str] = {
    Feature.PROCESSES: "the workers are processes on the Dask workers' machines: no local pids (worker_pids() is empty)",
}

# The Dask cells, where the extra is installed (robustpool[dask]): the same tests on a real
# LocalCluster of 2 worker processes (tests/on_dask/cluster.py).
if importlib.util.find_spec("distributed") is not None:
    CELLS += (
        Cell(
            "RobustPool",
            "dask",
            _robust_pool_dask,
            cannot={**_DASK_CANNOT, Feature.EXECUTOR_API: "a multiprocessing.Pool has no shutdown(); its map returns a list"},
            engines=2,
        ),
        Cell(
            "RobustExecutor",
            "dask",
            _robust_executor_dask,
            cannot={**_DASK_CANNOT, Feature.POOL_API: "a concurrent.futures executor has no apply/imap/close/join"},
            engines=2,
        ),
    )
