"""apply / apply_async, and the AsyncResult they return."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from robustpool import AsyncResult

from .cells import GET, Feature, PoolFactory
from .workers import _add, _affine, _raise_key_error, _sleep_return, _square

pytestmark = pytest.mark.requires(Feature.POOL_API)


@pytest.mark.each_start_method
def test_apply_positional_and_keyword_arguments(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        assert pool.apply(_add, (2, 3)) == 5
        assert pool.apply(_affine, (4,), {"scale": 3, "offset": 2}) == 14
        assert pool.apply(_affine, (), {"x": 5, "offset": -1}) == 4
        assert pool.apply(_square, [7]) == 49


def test_apply_async_callback_fires_on_success_only(pool_factory: PoolFactory) -> None:
    got: list[object] = []
    errors: list[BaseException] = []
    with pool_factory(1) as pool:
        r = pool.apply_async(_add, (20, 22), callback=got.append, error_callback=errors.append)
        assert r.get(timeout=GET) == 42
    assert got == [42]
    assert errors == []


def test_apply_async_error_callback_fires_on_failure_only(pool_factory: PoolFactory) -> None:
    got: list[object] = []
    errors: list[BaseException] = []
    with pool_factory(1) as pool:
        r = pool.apply_async(_raise_key_error, (7,), callback=got.append, error_callback=errors.append)
        with pytest.raises(KeyError, match="missing 7"):
            r.get(timeout=GET)
        assert not r.successful()
    assert got == []
    assert len(errors) == 1
    assert isinstance(errors[0], KeyError)


# --------------------------------------------------------------------------------------
# AsyncResult
# --------------------------------------------------------------------------------------


def test_async_result_get_timeout_wait_ready_successful(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        r: AsyncResult[Any] = pool.apply_async(_sleep_return, (0.6, "done"))
        with pytest.raises(ValueError):
            r.successful()
        assert not r.ready()
        t0 = time.monotonic()
        with pytest.raises(multiprocessing.TimeoutError):
            r.get(timeout=0.05)
        assert time.monotonic() - t0 < 0.5
        assert not r.ready()
        r.wait(timeout=GET)
        assert r.ready()
        assert r.successful()
        assert r.get(timeout=0) == "done"
        assert r.get() == "done"


def test_async_result_wait_with_timeout_returns_when_not_ready(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        r = pool.apply_async(_sleep_return, (0.5, 1))
        t0 = time.monotonic()
        r.wait(timeout=0.05)
        assert time.monotonic() - t0 < 0.45
        assert not r.ready()
        assert r.get(timeout=GET) == 1


def test_async_result_successful_false_after_failure(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        r = pool.apply_async(_raise_key_error, (1,))
        r.wait(timeout=GET)
        assert r.ready()
        assert r.successful() is False
