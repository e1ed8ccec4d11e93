"""The statistics a pool reports: frozen snapshots, the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final


@final
@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One live worker as last seen: its pid (None while starting), tasks it was given,
    and the RSS of its process tree in bytes (None before the first sample)."""

    pid: int | None
    tasks: int
    rss: int | None


@final
@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool, from ``RobustPool.stats()``. Counts are of items (a chunk of
    n items counts n); ``replaced`` maps why a worker exited to how many times."""

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
