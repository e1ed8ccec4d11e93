"""submit: a concurrent.futures.Future, with as_completed, wait and cancel.

Nothing here needs POOL_API: these tests also run on a concurrent.futures facade."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from .cells import GET, PoolFactory
from .workers import _affine, _raise_key_error, _sleep_return, _square, _touch


@pytest.mark.each_start_method
def test_submit_returns_a_future(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        fut = pool.submit(_affine, 3, scale=2, offset=1)
        assert isinstance(fut, concurrent.futures.Future)
        assert fut.result(timeout=GET) == 7
        assert fut.exception(timeout=0) is None
        assert fut.done() and not fut.cancelled()

        bad = pool.submit(_raise_key_error, 9)
        exc = bad.exception(timeout=GET)
        assert isinstance(exc, KeyError)
        with pytest.raises(KeyError):
            bad.result(timeout=0)

        futures = [pool.submit(_sleep_return, 0.05 * (i % 3), i) for i in range(8)]
        got = sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=GET))
        assert got == list(range(8))

        more = [pool.submit(_square, i) for i in range(5)]
        done, not_done = concurrent.futures.wait(more, timeout=GET)
        assert not not_done
        assert sorted(f.result() for f in done) == [0, 1, 4, 9, 16]


def test_cancelled_future_never_runs(pool_factory: PoolFactory, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pool_factory(1) as pool:
        blockers = [pool.submit(_sleep_return, 0.3, i) for i in range(4)]
        target = pool.submit(_touch, str(marker))
        assert target.cancel()
        assert target.cancelled()
        assert [f.result(timeout=GET) for f in blockers] == [0, 1, 2, 3]
        # Everything queued before this has been dispatched or dropped by now.
        assert pool.submit(_square, 3).result(timeout=GET) == 9
        with pytest.raises(concurrent.futures.CancelledError):
            target.result(timeout=0)
    assert not marker.exists()
