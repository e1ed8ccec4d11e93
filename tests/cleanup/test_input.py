"""Input is read lazily, and an input error surfaces at its position: the read-ahead stays
within its window (``buffersize`` chunks, or about ``_BYTES_AHEAD`` bytes of big items), an
endless input can be sliced, ``join(timeout=...)`` bounds the reading of a live endless
input, a stored input error neither keeps a dropped endless iterator alive nor loses its
traceback (kept as text in its notes), and the items before an input error come back
first, then the error, then the end of the iteration.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from robustpool import IMapIterator, RobustPool
from robustpool._jobs._stream import _BYTES_AHEAD

from ._support import GET, _bounded, _counting, _nbytes, _square


def _raising_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise ValueError(f"input broke after {n} items")


# --------------------------------------------------------------------------------------
# Laziness
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3])
def test_input_is_read_lazily(chunksize: int) -> None:
    buffersize = 4
    window = buffersize * chunksize + chunksize  # the window plus at most one chunk of slack
    pulled = [0]
    source = _counting(pulled, range(100_000))
    with RobustPool(2) as pool, pool.imap(_square, source, chunksize, buffersize=buffersize) as it:
        assert pulled[0] <= window
        assert [it.next(timeout=GET) for _ in range(5)] == [0, 1, 4, 9, 16]
        time.sleep(0.3)  # room for any background reader to run ahead
        assert 5 <= pulled[0] <= 5 + window


@pytest.mark.parametrize("chunksize", [1, 3])
def test_infinite_generator_with_islice(chunksize: int) -> None:
    buffersize = 4
    pulled = [0]
    source = _counting(pulled, itertools.count())
    with RobustPool(2) as pool, pool.imap(_square, source, chunksize, buffersize=buffersize) as it:
        assert list(itertools.islice(_bounded(it), 50)) == [x * x for x in range(50)]
        assert pulled[0] <= 50 + buffersize * chunksize + chunksize


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize(("n", "chunksize"), [(80, 1), (80, 3), (82, 3), (79, 2)])
def test_big_items_shrink_the_read_ahead_and_iteration_still_ends(ordered: bool, n: int, chunksize: int) -> None:
    """1 MiB items: the window drops from ``buffersize`` chunks (here every item) to about
    _BYTES_AHEAD of input, and the iterator ends whichever chunk meets the input's end."""
    mib = 1 << 20
    ahead = _BYTES_AHEAD // mib
    pulled = [0]
    source = _counting(pulled, (bytes([k % 256]) * mib for k in range(n)))  # distinct: no pickle memo
    with RobustPool(2) as pool:
        imap = pool.imap if ordered else pool.imap_unordered
        with imap(_nbytes, source, chunksize, buffersize=64) as it:
            assert it.next(timeout=GET) == mib
            assert pulled[0] <= 1 + ahead + 2 * chunksize < n
            assert list(_bounded(it)) == [mib] * (n - 1)
        assert list(pool.imap(_nbytes, [b"y" * mib] * 9, 4)) == [mib] * 9


class _BadAfter:
    """A class-based endless iterator (its frames, unlike a generator's, keep their caller)."""

    def __init__(self, bad_at: int, unpicklable: bool) -> None:
        self.i, self.bad_at, self.unpicklable = -1, bad_at, unpicklable

    def __iter__(self) -> _BadAfter:
        return self

    def __next__(self) -> Any:
        self.i += 1
        if self.i == self.bad_at:
            if self.unpicklable:
                return threading.Lock()
            raise ValueError("bad input")
        return self.i


def _start_and_drop(pool: RobustPool, source: Iterable[Any]) -> weakref.ref[IMapIterator[Any]]:
    it = pool.imap(_square, source)
    assert it.next(timeout=GET) == 0
    return weakref.ref(it)  # the iterator is dropped here, never closed


@pytest.mark.parametrize("unpicklable", [True, False], ids=["unpicklable-item", "input-raises"])
def test_a_stored_input_error_does_not_keep_a_dropped_endless_iterator_alive(unpicklable: bool) -> None:
    # The stored error's traceback held the frames that made it, one of which held the
    # iterator: join() then read the endless input forever.
    pool = RobustPool(2)
    try:
        ref = _start_and_drop(pool, _BadAfter(3, unpicklable))
        gc.collect()
        assert ref() is None
        pool.close()
        t0 = time.monotonic()
        pool.join(timeout=GET)
        assert time.monotonic() - t0 < GET / 2
    finally:
        pool.terminate()


def test_join_timeout_bounds_reading_a_live_endless_input() -> None:
    pool = RobustPool(2)
    try:
        it = pool.imap(_square, itertools.count())
        assert it.next(timeout=GET) == 0
        pool.close()
        t0 = time.monotonic()
        pool.join(timeout=1.0)  # the input is endless and the iterator reachable
        assert time.monotonic() - t0 < 5.0
        assert it.next(timeout=GET) == 1  # still usable
    finally:
        pool.terminate()


def test_an_input_error_keeps_its_traceback_as_text() -> None:
    with RobustPool(1) as pool, pool.imap(_square, _BadAfter(2, False)) as it:
        assert [it.next(timeout=GET) for _ in range(2)] == [0, 1]
        with pytest.raises(ValueError, match="bad input") as info:
            it.next(timeout=GET)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "__next__" in notes and "raise ValueError" in notes


# --------------------------------------------------------------------------------------
# An input error surfaces at its position
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("buffersize", [1, None])
@pytest.mark.parametrize("chunksize", [1, 3])
def test_input_error_surfaces_at_its_position(chunksize: int, buffersize: int | None) -> None:
    with RobustPool(2) as pool, pool.imap(_square, _raising_after(7), chunksize, buffersize=buffersize) as it:
        assert [it.next(timeout=GET) for _ in range(7)] == [x * x for x in range(7)]
        with pytest.raises(ValueError, match="input broke after 7 items"):
            it.next(timeout=GET)
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
