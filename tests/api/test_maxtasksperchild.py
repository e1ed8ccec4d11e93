"""maxtasksperchild: workers are recycled after that many tasks, without hanging close/join."""

from __future__ import annotations

from collections import Counter

import pytest

from .cells import Feature, PoolFactory
from .workers import _pid_of, _square

pytestmark = pytest.mark.requires(Feature.POOL_API, Feature.RECYCLE)


@pytest.mark.process  # recycled workers are told apart by their pids
@pytest.mark.each_start_method
def test_maxtasksperchild_recycles_workers(pool_factory: PoolFactory) -> None:
    with pool_factory(2, maxtasksperchild=2) as pool:
        results = pool.map(_pid_of, range(20), chunksize=1)
        assert [x for x, _ in results] == [x * 3 for x in range(20)]
        pids = Counter(pid for _, pid in results)
        assert len(pids) > 2
        assert max(pids.values()) <= 2
        assert pool.apply(_square, (3,)) == 9


def test_maxtasksperchild_one_then_close_join_does_not_hang(pool_factory: PoolFactory) -> None:
    with pool_factory(2, maxtasksperchild=1) as pool:
        results = [pool.apply_async(_square, (i,)) for i in range(6)]
        pool.close()
        pool.join()
        assert [r.get(timeout=0) for r in results] == [i * i for i in range(6)]
