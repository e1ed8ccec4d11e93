"""Errors: one failing item inside a chunk fails only itself, exceptions come back as
themselves with the worker's frames (or as RemoteTaskError), SystemExit and
KeyboardInterrupt are the task's error, and a raising callback is logged."""

from __future__ import annotations

import logging
import os
import traceback

import pytest

from robustpool import RemoteTaskError

from .cells import GET, Feature, PoolFactory
from .workers import (
    CustomTaskError,
    _fail_on_5,
    _helper_that_raises,
    _raise_custom,
    _raise_key_error,
    _raise_keyboard_interrupt,
    _raise_system_exit,
    _raise_unrebuildable,
    _square,
    _task_calling_helper,
)

pytestmark = pytest.mark.requires(Feature.POOL_API)

# --------------------------------------------------------------------------------------
# chunksize > 1: one failing item fails only itself
# --------------------------------------------------------------------------------------


def test_chunked_imap_failure_fails_only_that_item(pool_factory: PoolFactory) -> None:
    outcomes: list[object] = []
    with pool_factory(2) as pool:
        it = pool.imap(_fail_on_5, range(20), chunksize=8)
        for _ in range(20):
            try:
                outcomes.append(it.next(timeout=GET))
            except ValueError as exc:
                outcomes.append(exc)
        with pytest.raises(StopIteration):
            it.next(timeout=GET)
    assert isinstance(outcomes[5], ValueError)
    assert outcomes[:5] + outcomes[6:] == [x * x for x in range(20) if x != 5]


def test_chunked_map_raises_the_item_error(pool_factory: PoolFactory) -> None:
    with pool_factory(2) as pool:
        with pytest.raises(ValueError, match="item 5 is bad"):
            pool.map(_fail_on_5, range(20), chunksize=8)
        with pytest.raises(ValueError, match="item 5 is bad"):
            pool.map_async(_fail_on_5, range(20), chunksize=8).get(timeout=GET)
        assert pool.map(_square, range(20), chunksize=8) == [x * x for x in range(20)]


# --------------------------------------------------------------------------------------
# Exceptions and tracebacks
# --------------------------------------------------------------------------------------


@pytest.mark.each_start_method
def test_traceback_shows_worker_frames(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        with pytest.raises(ValueError, match="helper refused 3") as info:
            pool.apply(_task_calling_helper, (3,))
        with pytest.raises(ValueError, match="helper refused 4") as info_map:
            pool.map(_task_calling_helper, [4])
    raise_line = _helper_that_raises.__code__.co_firstlineno + 1
    for exc in (info.value, info_map.value):
        text = "".join(traceback.format_exception(exc))
        assert "_helper_that_raises" in text
        assert "_task_calling_helper" in text
        assert os.path.basename(_helper_that_raises.__code__.co_filename) in text  # workers.py
        assert f"line {raise_line}" in text
        assert 'raise ValueError(f"helper refused {x}")' in text


def test_exception_type_is_preserved(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        with pytest.raises(CustomTaskError) as info:
            pool.apply(_raise_custom, (17,))
        assert type(info.value) is CustomTaskError
        assert info.value.code == 17
        assert info.value.text == "custom failure 17"
        with pytest.raises(KeyError):
            pool.apply(_raise_key_error, (1,))
        fut = pool.submit(_raise_custom, 3)
        exc = fut.exception(timeout=GET)
        assert isinstance(exc, CustomTaskError) and exc.code == 3


@pytest.mark.requires(Feature.PICKLES)
def test_exception_that_cannot_be_rebuilt_becomes_remote_task_error(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        with pytest.raises(RemoteTaskError) as info:
            pool.apply(_raise_unrebuildable, (8,))
        assert pool.apply(_square, (5,)) == 25
    err = info.value
    assert "UnrebuildableError" in err.type_name
    assert "UnrebuildableError" in str(err)
    assert "unrebuildable 8" in str(err)
    assert "_raise_unrebuildable" in err.remote_traceback
    assert "Traceback" in err.remote_traceback


@pytest.mark.each_start_method
def test_system_exit_and_keyboard_interrupt_are_the_tasks_error(pool_factory: PoolFactory) -> None:
    with pool_factory(1) as pool:
        with pytest.raises(SystemExit) as info:
            pool.apply_async(_raise_system_exit, (3,)).get(timeout=GET)
        assert info.value.code == 3
        assert pool.apply_async(_square, (6,)).get(timeout=GET) == 36
        with pytest.raises(KeyboardInterrupt):
            pool.apply_async(_raise_keyboard_interrupt).get(timeout=GET)
        assert pool.apply_async(_square, (7,)).get(timeout=GET) == 49
        fut = pool.submit(_raise_system_exit, 4)
        assert isinstance(fut.exception(timeout=GET), SystemExit)
        assert pool.map(_square, range(4)) == [0, 1, 4, 9]


# --------------------------------------------------------------------------------------
# Callbacks that raise
# --------------------------------------------------------------------------------------


def _raising_callback(value: object) -> None:  # runs in the owner, never in a worker
    raise RuntimeError(f"callback went wrong with {value!r}")


def test_raising_callback_is_logged_and_other_results_arrive(pool_factory: PoolFactory, caplog: pytest.LogCaptureFixture) -> None:
    good: list[object] = []
    with caplog.at_level(logging.ERROR, logger="robustpool"), pool_factory(2) as pool:
        r1 = pool.apply_async(_square, (4,), callback=_raising_callback)
        r2 = pool.map_async(_square, range(5), callback=_raising_callback)
        r3 = pool.apply_async(_raise_key_error, (2,), error_callback=_raising_callback)
        r4 = pool.apply_async(_square, (5,), callback=good.append)
        assert r1.get(timeout=GET) == 16
        assert r2.get(timeout=GET) == [0, 1, 4, 9, 16]
        with pytest.raises(KeyError):
            r3.get(timeout=GET)
        assert r4.get(timeout=GET) == 25
        assert pool.map(_square, range(3)) == [0, 1, 4]
    assert good == [25]
    records = [rec for rec in caplog.records if rec.name == "robustpool" and rec.exc_info]
    texts = [str(rec.exc_info[1]) for rec in records if rec.exc_info]
    assert any("callback went wrong with 16" in t for t in texts)
    assert any("callback went wrong with [0, 1, 4, 9, 16]" in t for t in texts)
    assert any("callback went wrong with KeyError" in t for t in texts)
