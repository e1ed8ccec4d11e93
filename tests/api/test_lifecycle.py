"""Lifecycle: close, join, terminate, ``with`` (normal exit waits, an exception terminates)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from robustpool import AsyncResult, PoolTerminatedError

from .cells import Feature, PoolFactory
from .workers import _add, _sleep_return, _slow_identity, _square

pytestmark = pytest.mark.requires(Feature.POOL_API)


def test_closed_pool_refuses_new_work(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        pool.close()
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(_square, (1,))
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply(_square, (1,))
        with pytest.raises(ValueError, match="Pool not running"):
            pool.map(_square, range(3))
        with pytest.raises(ValueError, match="Pool not running"):
            pool.map_async(_square, range(3))
        with pytest.raises(ValueError, match="Pool not running"):
            pool.starmap(_add, [(1, 2)])
        with pytest.raises(ValueError, match="Pool not running"):
            pool.imap(_square, range(3))
        with pytest.raises(ValueError, match="Pool not running"):
            pool.imap_unordered(_square, range(3))
        with pytest.raises(ValueError, match="Pool not running"):
            pool.submit(_square, 1)
        pool.join()


def test_join_before_close_is_an_error(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        with pytest.raises(ValueError):
            pool.join()
        assert pool.apply(_square, (4,)) == 16


def test_using_the_pool_after_the_with_block_is_an_error(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        assert pool.apply(_square, (2,)) == 4
    with pytest.raises(ValueError):
        pool.apply_async(_square, (1,))
    with pytest.raises(ValueError):
        pool.map(_square, range(2))


def test_entering_a_terminated_pool_is_an_error(pool_factory: PoolFactory) -> None:
    pool = pool_factory(1)
    pool.terminate()
    with pytest.raises(ValueError), pool:
        pass


@pytest.mark.each_start_method
def test_with_block_normal_exit_waits_for_outstanding_results(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        results = [pool.apply_async(_sleep_return, (0.4, i)) for i in range(4)]
        quick = pool.apply_async(_square, (9,))
    assert all(r.ready() for r in results)
    assert quick.ready()
    assert [r.get(timeout=0) for r in results] == [0, 1, 2, 3]
    assert quick.get(timeout=0) == 81


class _LeaveWithBlockError(Exception):
    pass


@pytest.mark.requires(Feature.KILL)  # the running tasks sleep 30 s: terminating must stop them
@pytest.mark.each_start_method
def test_with_block_exception_exit_terminates(pool_factory: PoolFactory) -> None:
    results: list[AsyncResult[Any]] = []
    t0 = 0.0
    with pytest.raises(_LeaveWithBlockError), pool_factory(2) as pool:
        results = [pool.apply_async(_sleep_return, (30, i)) for i in range(6)]
        time.sleep(0.3)  # let the first tasks start running
        t0 = time.monotonic()
        raise _LeaveWithBlockError
    assert time.monotonic() - t0 < 10
    for r in results:
        with pytest.raises(PoolTerminatedError):
            r.get(timeout=5)
    assert time.monotonic() - t0 < 10


@pytest.mark.requires(Feature.KILL)  # the running tasks sleep 20 s: join must not wait for them
@pytest.mark.each_start_method
def test_terminate_with_many_long_tasks_queued_is_prompt(pool_factory: PoolFactory) -> None:
    pool = pool_factory(2)
    try:
        mapped = pool.map_async(_slow_identity, [20.0] * 1000, chunksize=1)
        applied = [pool.apply_async(_sleep_return, (20, i)) for i in range(200)]
        time.sleep(0.3)
        t0 = time.monotonic()
        pool.terminate()
        assert time.monotonic() - t0 < 8
        t1 = time.monotonic()
        pool.join()
        assert time.monotonic() - t1 < 5
    finally:
        pool.terminate()
    with pytest.raises(PoolTerminatedError):
        mapped.get(timeout=5)
    for r in applied:
        with pytest.raises(PoolTerminatedError):
            r.get(timeout=5)
    with pytest.raises(ValueError):
        pool.apply_async(_square, (1,))


def test_terminate_twice_and_join_after_terminate(pool_factory: PoolFactory) -> None:
    pool = pool_factory(1)
    pool.terminate()
    pool.terminate()
    pool.join()
    pool.join()
