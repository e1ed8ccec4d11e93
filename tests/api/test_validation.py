"""Argument validation: the constructor's, and each call's, at the call."""

from __future__ import annotations

from typing import Any

import pytest

from .cells import Feature, PoolFactory
from .workers import _add, _square

pytestmark = pytest.mark.requires(Feature.POOL_API)


@pytest.mark.parametrize("processes", [0, -1])
def test_pool_with_no_processes_is_rejected(pool_factory: PoolFactory, processes: int) -> None:
    with pytest.raises(ValueError):
        pool_factory(processes)


def test_pool_processes_attribute(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        assert pool.processes == 2


def test_non_callable_initializer_is_rejected(pool_factory: PoolFactory) -> None:
    with pytest.raises(TypeError):
        pool_factory(1, initializer=42)  # type: ignore[arg-type]


@pytest.mark.requires(Feature.RECYCLE)
@pytest.mark.parametrize("value", [0, -1, 0.5, "12"])
def test_invalid_maxtasksperchild_is_rejected(pool_factory: PoolFactory, value: Any) -> None:
    with pytest.raises(ValueError):
        pool_factory(1, maxtasksperchild=value)


def test_chunksize_zero_is_rejected_at_the_call(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        with pytest.raises(ValueError):
            pool.map(_square, range(5), chunksize=0)
        with pytest.raises(ValueError):
            pool.map_async(_square, range(5), chunksize=0)
        with pytest.raises(ValueError):
            pool.starmap(_add, [(1, 2)], chunksize=0)
        with pytest.raises(ValueError):
            pool.starmap_async(_add, [(1, 2)], chunksize=0)
        with pytest.raises(ValueError):
            pool.imap(_square, range(5), chunksize=0)
        with pytest.raises(ValueError):
            pool.imap_unordered(_square, range(5), chunksize=0)
        assert pool.map(_square, range(3)) == [0, 1, 4]


def test_non_callable_function_is_rejected_at_the_call(pool_factory: PoolFactory) -> None:
    not_callable: Any = 123
    with pool_factory(1) as pool:
        with pytest.raises(TypeError):
            pool.apply(not_callable)
        with pytest.raises(TypeError):
            pool.apply_async(not_callable)
        with pytest.raises(TypeError):
            pool.map(not_callable, range(3))
        with pytest.raises(TypeError):
            pool.map_async(not_callable, range(3))
        with pytest.raises(TypeError):
            pool.starmap(not_callable, [(1, 2)])
        with pytest.raises(TypeError):
            pool.imap(not_callable, range(3))
        with pytest.raises(TypeError):
            pool.imap_unordered(not_callable, range(3))
        with pytest.raises(TypeError):
            pool.submit(not_callable)
        assert pool.apply(_square, (3,)) == 9
