"""imap / imap_unordered: step by step, timeouts, and an item's error (or the input's) at
its position while iteration goes on."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter

import pytest

from .cells import GET, Feature, PoolFactory
from .workers import InputBrokeError, _fail_on_5, _numbers_then_error, _slow_identity, _square

pytestmark = pytest.mark.requires(Feature.POOL_API)


@pytest.mark.each_start_method
def test_imap_list_stepwise_and_large_chunks(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        assert list(pool.imap(_square, range(10))) == [x * x for x in range(10)]

        it = pool.imap(_square, range(10))
        for x in range(10):
            assert it.next(timeout=GET) == x * x
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
        with pytest.raises(StopIteration):
            next(it)

        it = pool.imap(_square, range(1000), chunksize=100)
        for x in range(1000):
            assert next(it) == x * x
        with pytest.raises(StopIteration):
            next(it)


def test_imap_next_timeout_raises_timeout_error(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        it = pool.imap(_slow_identity, [0.6])
        t0 = time.monotonic()
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.05)
        assert time.monotonic() - t0 < 0.5
        assert it.next(timeout=GET) == 0.6
        with pytest.raises(StopIteration):
            it.next(timeout=GET)


@pytest.mark.parametrize("chunksize", [1, 4])
def test_imap_item_error_at_its_position_and_iteration_continues(pool_factory: PoolFactory, chunksize: int) -> None:
    with pool_factory(2) as pool:
        it = pool.imap(_fail_on_5, range(12), chunksize=chunksize)
        for x in range(5):
            assert it.next(timeout=GET) == x * x
        with pytest.raises(ValueError, match="item 5 is bad"):
            it.next(timeout=GET)
        for x in range(6, 12):
            assert it.next(timeout=GET) == x * x
        with pytest.raises(StopIteration):
            it.next(timeout=GET)


@pytest.mark.parametrize("chunksize", [1, 4])
def test_imap_unordered_item_error_and_iteration_continues(pool_factory: PoolFactory, chunksize: int) -> None:
    values: list[int] = []
    errors: list[BaseException] = []
    with pool_factory(2) as pool:
        it = pool.imap_unordered(_fail_on_5, range(12), chunksize=chunksize)
        for _ in range(12):
            try:
                values.append(it.next(timeout=GET))
            except ValueError as exc:
                errors.append(exc)
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
    assert sorted(values) == [x * x for x in range(12) if x != 5]
    assert len(errors) == 1
    assert "item 5 is bad" in str(errors[0])


@pytest.mark.parametrize("chunksize", [1, 3])
def test_imap_input_error_surfaces_at_its_position(pool_factory: PoolFactory, chunksize: int) -> None:
    with pool_factory(2) as pool:
        it = pool.imap(_square, _numbers_then_error(5), chunksize=chunksize)
        for x in range(5):
            assert it.next(timeout=GET) == x * x
        with pytest.raises(InputBrokeError, match="after 5 items"):
            it.next(timeout=GET)
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
        # The pool is still usable.
        assert pool.apply(_square, (6,)) == 36
        assert list(pool.imap(_square, range(3))) == [0, 1, 4]


def test_imap_input_error_at_the_start(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        it = pool.imap(_square, _numbers_then_error(0))
        with pytest.raises(InputBrokeError):
            it.next(timeout=GET)
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
        assert pool.apply(_square, (2,)) == 4


def test_imap_unordered_input_error_is_delivered_with_the_rest(pool_factory: PoolFactory) -> None:
    values: list[int] = []
    errors: list[BaseException] = []
    with pool_factory(2) as pool:
        it = pool.imap_unordered(_square, _numbers_then_error(6))
        for _ in range(7):
            try:
                values.append(it.next(timeout=GET))
            except InputBrokeError as exc:
                errors.append(exc)
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
        assert pool.apply(_square, (3,)) == 9
    assert sorted(values) == [x * x for x in range(6)]
    assert len(errors) == 1


@pytest.mark.each_start_method
def test_imap_unordered_yields_the_same_multiset(pool_factory: PoolFactory) -> None:
    data = [x % 7 for x in range(60)]
    with pool_factory(2) as pool:
        got = list(pool.imap_unordered(_square, data))
        got_chunked = list(pool.imap_unordered(_square, data, chunksize=7))
    expected = Counter(_square(x) for x in data)
    assert Counter(got) == expected
    assert Counter(got_chunked) == expected


@pytest.mark.parametrize("chunksize", [1, 2, 3])
def test_an_imap_read_to_its_end_after_close_loses_no_chunk(pool_factory: PoolFactory, chunksize: int) -> None:
    # The feeder that reads the last of the input must hand its last chunks to the engine
    # before it lets the engine finish: a closed pool with nothing running and no stream
    # still feeding it stops at once, and chunks submitted after that fail. join() reads
    # what the stream still owes, a window at a time; the last slice here is shorter than
    # a window, so one read takes the last items and the end of the input.
    pool = pool_factory(1, buffersize=12)
    try:
        # The first read takes a window (12 chunks) of the 13 chunks' worth of input ...
        it = pool.imap(_square, iter(range(13 * chunksize)), chunksize)
        first = it.next(timeout=GET)
        time.sleep(0.3)  # ... and runs: the engine is idle, the stream owes one chunk
        pool.close()
        pool.join(GET)  # reads the last chunk and the end of the input in one go
        got = [first] + [it.next(timeout=GET) for _ in range(13 * chunksize - 1)]
        assert got == [x * x for x in range(13 * chunksize)]
    finally:
        pool.terminate()
