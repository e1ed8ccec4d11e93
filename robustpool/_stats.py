"""The statistics a pool reports: frozen snapshots, the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final


@final
@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One live worker as last seen: its pid (None while starting), tasks it was given,
    and the RSS of its process tree in bytes (None before the first sample).

    An item of ``PoolStats.workers``; frozen. On a thread pool each thread is one, with
    ``pid`` and ``rss`` always None.

    :ivar pid: the worker's pid; None while it is still starting (and on a thread pool).
    :ivar tasks: how many tasks (chunks) it was given so far, the one it runs included.
    :ivar rss: the resident memory of its process tree (itself and its subprocesses), in
        bytes, as last sampled (about twice a second); None before the first sample and on a
        thread pool.
    """

    pid: int | None
    tasks: int
    rss: int | None


@final
@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool, from ``RobustPool.stats()``. Counts are of items (a chunk of
    n items counts n); ``replaced`` maps why a worker exited to how many times.

    Frozen, and read without stopping the pool, so counts may be a moment old. Every pool and
    executor returns one (``stats()``); a thread pool's ``tasks_retried`` and
    ``tasks_timed_out`` are always 0.

    :ivar workers_alive: workers running right now, those still starting excepted.
    :ivar tasks_done: items that completed with a value.
    :ivar tasks_failed: items that failed, with their own exception or one of robustpool's
        (a lost worker, a timeout, a serialization error).
    :ivar tasks_retried: times an item was run again after it killed its worker (``retries``).
    :ivar tasks_timed_out: items that failed with ``TaskTimeoutError`` (also in
        ``tasks_failed``).
    :ivar workers_replaced: workers that died, were killed (a timeout, a cancel) or were
        recycled: the sum of ``replaced``.
    :ivar replaced: ``(why, count)`` pairs sorted by ``why``, such as ``("SIGKILL (-9)", 2)``,
        ``("timeout", 1)``, ``("cancelled", 1)``, ``("recycled (maxtasksperchild)", 4)`` or
        ``("recycled (memory_limit)", 1)``; ``dict(stats.replaced)`` makes it a mapping.
    :ivar workers: one ``WorkerStats`` per live worker.
    """

    workers_alive: int
    tasks_done: int
    tasks_failed: int
    tasks_retried: int
    tasks_timed_out: int
    workers_replaced: int
    replaced: tuple[tuple[str, int], ...]
    workers: tuple[WorkerStats, ...]


for _cls in (PoolStats, WorkerStats):
    _cls.__module__ = "robustpool"  # as imported by users (see _errors)
