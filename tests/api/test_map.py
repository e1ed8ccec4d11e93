"""map / map_async / starmap / starmap_async: results in order, any iterable, callbacks,
the first error raised, and a death inside a chunk named by its item."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest

from robustpool import WorkerLostError

from .cells import GET, Feature, PoolFactory
from .workers import (
    InputBrokeError,
    _add,
    _fail_on_5,
    _fail_on_odd_after_2,
    _numbers_then_error,
    _sigkill_at,
    _sleep_return,
    _square,
)

pytestmark = pytest.mark.requires(Feature.POOL_API)


@pytest.mark.each_start_method
@pytest.mark.parametrize("chunksize", [None, 20])
def test_map_family_matches_builtins(pool_factory: PoolFactory, chunksize: int | None) -> None:
    numbers = list(range(100))
    pairs = list(zip(range(100), range(100, 0, -1), strict=True))
    with pool_factory(2) as pool:
        assert pool.map(_square, numbers, chunksize) == list(map(_square, numbers))
        assert pool.map_async(_square, numbers, chunksize).get(timeout=GET) == list(map(_square, numbers))
        assert pool.starmap(_add, pairs, chunksize) == list(itertools.starmap(_add, pairs))
        assert pool.starmap_async(_add, pairs, chunksize).get(timeout=GET) == list(itertools.starmap(_add, pairs))


def test_map_accepts_generators_and_other_iterables(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        assert pool.map(_square, (x for x in range(30))) == [x * x for x in range(30)]
        assert pool.map(_square, {3: "a", 1: "b"}) == [9, 1]
        assert pool.starmap(_add, iter([(1, 2), (3, 4)])) == [3, 7]


def test_map_slices_lists_tuples_and_ranges_without_keeping_them(pool_factory: PoolFactory) -> None:
    inputs: list[Any] = [range(-7, 200, 3), range(50, 0, -2), tuple(range(40)), list(range(40))]
    with pool_factory(2) as pool:
        for data in inputs:
            for chunksize in (None, 1, 7, 1000):
                assert pool.map(_square, data, chunksize) == [x * x for x in data], (data, chunksize)
        # Chunks are cut when the call is made: changing the list afterwards changes nothing.
        pairs = [(0.02, n) for n in range(40)]
        r = pool.starmap_async(_sleep_return, pairs, 4)
        pairs[:] = [(0.0, -1)] * 40
        assert r.get(timeout=GET) == list(range(40))


@pytest.mark.process  # a worker kills itself with SIGKILL
def test_a_death_inside_a_range_chunk_names_its_item(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        r = pool.map_async(functools.partial(_sigkill_at, at=1234), range(3000), 500)
        with pytest.raises(WorkerLostError) as info:
            r.get(timeout=GET)
        assert info.value.task_index == 1234
        assert "1234" in str(info.value)
        assert pool.map(_square, range(5)) == [0, 1, 4, 9, 16]


def test_empty_iterables_for_every_map_variant(pool_factory: PoolFactory) -> None:
    seen: list[object] = []
    with pool_factory(1) as pool:
        assert pool.map(_square, []) == []
        assert pool.map(_square, iter(())) == []
        assert pool.starmap(_add, []) == []
        r = pool.map_async(_square, [], callback=seen.append)
        assert r.get(timeout=GET) == []
        assert r.ready() and r.successful()
        assert pool.starmap_async(_add, []).get(timeout=GET) == []
        assert pool.map(_square, [], chunksize=20) == []
        assert list(pool.imap(_square, [])) == []
        assert list(pool.imap_unordered(_square, [])) == []
        it = pool.imap(_square, iter(()))
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
    assert seen == [[]]


def test_map_async_callback_gets_the_whole_list(pool_factory: PoolFactory) -> None:
    got: list[object] = []
    errors: list[BaseException] = []
    with pool_factory(2) as pool:
        r = pool.map_async(_square, range(10), callback=got.append, error_callback=errors.append)
        assert r.get(timeout=GET) == [x * x for x in range(10)]
    assert got == [[x * x for x in range(10)]]
    assert errors == []


def test_map_async_error_callback_gets_the_exception(pool_factory: PoolFactory) -> None:
    got: list[object] = []
    errors: list[BaseException] = []
    with pool_factory(2) as pool:
        r = pool.map_async(_fail_on_5, range(10), callback=got.append, error_callback=errors.append)
        with pytest.raises(ValueError, match="item 5 is bad"):
            r.get(timeout=GET)
    assert got == []
    assert len(errors) == 1
    assert isinstance(errors[0], ValueError)


def test_map_raises_the_first_error(pool_factory: PoolFactory) -> None:
    # One worker runs the chunks in order, so the first error by position also arrives first.
    with pool_factory(1) as pool:
        with pytest.raises(KeyError, match="odd item 3"):
            pool.map(_fail_on_odd_after_2, range(12), chunksize=2)
        assert pool.map(_square, range(4)) == [0, 1, 4, 9]


def test_map_with_failing_input_generator_raises_and_pool_is_reusable(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        with pytest.raises(InputBrokeError, match="after 4"):
            pool.map(_square, _numbers_then_error(4))
        with pytest.raises(InputBrokeError, match="after 0"):
            pool.map(_square, _numbers_then_error(0))
        assert pool.map(_square, range(5)) == [0, 1, 4, 9, 16]
