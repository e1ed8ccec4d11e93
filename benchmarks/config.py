"""Run settings: what to run, how often, and how big (``scale`` shrinks every workload)."""

from __future__ import annotations

from dataclasses import dataclass

WORKERS = 2


@dataclass(frozen=True)
class Config:
    """Settings of one harness run. Sizes are the full-run sizes times ``scale``."""

    repeats: int = 5
    cases: tuple[str, ...] = ()  # empty: all cases
    peers: tuple[str, ...] = ()  # empty: all peers (of no group, or of the Dask group with ``dask``)
    dask: bool = False  # the Dask peers, on a LocalCluster started for the run
    scale: float = 1.0
    workers: int = WORKERS
    recovery_timeout: float = 10.0  # per recovery child, as the brief asks
    case_timeout: float = 120.0  # bound on one in-process measurement
    memory_timeout: float = 120.0  # bound on one imap_memory child
    child_timeout: float = 30.0  # bound on one startup_threaded or import child
    # The slow cases run fewer repeats (a cap on ``repeats``). cpu_1ms and payload_1MB keep
    # five: their spread between repeats on a shared 2-core machine is +-15%.
    max_repeats: tuple[tuple[str, int], ...] = (
        ("tiny_imap_c1", 3),
        ("recovery", 3),
        ("imap_memory", 1),
    )

    def size(self, full: int, minimum: int = 1) -> int:
        """``full`` scaled down, never below ``minimum``."""
        return max(minimum, round(full * self.scale))

    def repeats_for(self, case: str) -> int:
        """The repeats for ``case``: ``repeats``, capped for the slow cases."""
        cap = dict(self.max_repeats).get(case)
        return max(1, min(self.repeats, cap) if cap is not None else self.repeats)


def quick(repeats: int | None = None) -> Config:
    """About a minute: a tenth of the sizes, three repeats (two for recovery), a 5 s recovery limit."""
    return Config(
        repeats=repeats or 3,
        scale=0.1,
        recovery_timeout=5.0,
        case_timeout=60.0,
        child_timeout=15.0,
        max_repeats=(("recovery", 2), ("imap_memory", 1)),
    )
