"""initializer / initargs: run in every worker; one that keeps failing breaks the pool
(InitializerError) instead of respawning workers forever."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from robustpool import InitializerError

from .cells import Cell, Feature, PoolFactory
from .workers import _failing_initializer, _read_init_value, _set_init_value, _square

pytestmark = pytest.mark.requires(Feature.POOL_API)


@pytest.mark.process  # workers are told apart by their pids
@pytest.mark.each_start_method
def test_initializer_runs_in_each_worker(pool_factory: PoolFactory) -> None:
    with pool_factory(2, initializer=_set_init_value, initargs=("ready",)) as pool:
        results = pool.map(_read_init_value, range(20), chunksize=1)
    for value, pid in results:
        assert value == f"ready:{pid}"


@pytest.mark.parametrize("processes", [1, 2])
def test_failing_initializer_breaks_the_pool_without_endless_respawn(
    pool_factory: PoolFactory, pool_cell: Cell, tmp_path: Path, processes: int
) -> None:
    marker = tmp_path / "init-attempts"
    with pool_factory(processes, initializer=_failing_initializer, initargs=(str(marker),)) as pool:
        r = pool.apply_async(_square, (3,))
        t0 = time.monotonic()
        with pytest.raises(InitializerError) as info:
            r.get(timeout=30)
        assert time.monotonic() - t0 < 20
        assert "initializer exploded: database unreachable" in str(info.value)
        assert "RuntimeError" in str(info.value)
        # New work fails the same way, promptly.
        with pytest.raises(InitializerError):
            pool.apply_async(_square, (4,)).get(timeout=10)
        time.sleep(0.5)
        attempts = len(marker.read_text().splitlines())
        time.sleep(0.5)
        assert len(marker.read_text().splitlines()) == attempts
        # Three fresh workers in a row, plus those already starting; each of a cluster's
        # engines (one per Dask worker) counts its own three.
        assert 3 <= attempts <= 3 * pool_cell.engines + processes
