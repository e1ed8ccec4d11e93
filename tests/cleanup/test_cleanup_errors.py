"""Cleanup errors never stop the other cleanups and are never silently dropped: ``close()``
and ``terminate()`` run every cleanup, log each error and then raise them together as an
ExceptionGroup; ``close()`` waits for running tasks and cleans their results before it
returns, raising their cleanup errors too; leaving the pool's ``with`` by an exception keeps
the user's error, with a note counting the cleanup errors; and a failing ``map`` logs its
cleanup errors and notes them on the item's error.
"""

from __future__ import annotations

import functools
import logging
import time

import pytest

from robustpool import IMapIterator, RobustPool

from ._support import GET, SQUARES_BUT_13, ConsumerError, _identity, _slow_unless_0, _square_unless_13


def _raise_for_odd(calls: list[int], value: int) -> None:
    calls.append(value)
    if value % 2:
        raise RuntimeError(f"cannot clean {value}")


def _slow_raising_cleanup(calls: list[int], value: int) -> None:
    time.sleep(0.2)
    calls.append(value)
    raise RuntimeError(f"cannot clean {value}")


def _robustpool_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "robustpool" and r.levelno >= logging.ERROR]


# --------------------------------------------------------------------------------------
# Cleanup errors
# --------------------------------------------------------------------------------------


def _buffered_iterator(pool: RobustPool, calls: list[int]) -> IMapIterator[int]:
    """An iterator over 0..9 whose consumer took 0 and dawdled: 1..9 are buffered."""
    it = pool.imap(_identity, range(10), buffersize=64, cleanup=functools.partial(_raise_for_odd, calls))
    assert it.next(timeout=GET) == 0
    time.sleep(1.0)
    return it


ODD_ERRORS = [f"cannot clean {v}" for v in (1, 3, 5, 7, 9)]


def test_close_runs_every_cleanup_then_raises_group(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with RobustPool(2) as pool:
        it = _buffered_iterator(pool, calls)
        with pytest.raises(ExceptionGroup) as info:
            it.close()
        it.close()  # a second close cleans nothing again and raises nothing
    assert sorted(calls) == list(range(1, 10))
    assert sorted(str(e) for e in info.value.exceptions) == ODD_ERRORS
    assert all(isinstance(e, RuntimeError) for e in info.value.exceptions)
    records = _robustpool_errors(caplog)
    assert len(records) == 5
    assert sorted(str(r.exc_info[1]) for r in records if r.exc_info) == ODD_ERRORS


def test_close_cleans_results_of_running_tasks_before_returning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with RobustPool(2) as pool:
        # Window of 3: items 1 and 2 (0.4 s each) are running when the consumer closes.
        it = pool.imap(_slow_unless_0, range(6), buffersize=3, cleanup=functools.partial(_slow_raising_cleanup, calls))
        assert it.next(timeout=GET) == 0
        errors: list[str] = []
        try:
            it.close()
        except ExceptionGroup as group:
            errors = sorted(str(e) for e in group.exceptions)
        calls_when_close_returned = sorted(calls)
    assert sorted(calls) == [1, 2]
    # close() waits for running tasks (close_timeout) and cleans their results, and a
    # cleanup error is raised by it like any other, not only logged.
    assert (calls_when_close_returned, errors) == ([1, 2], ["cannot clean 1", "cannot clean 2"])
    assert len(_robustpool_errors(caplog)) == 2


def test_terminate_runs_every_cleanup_then_raises_group(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    pool = RobustPool(2)
    try:
        it = _buffered_iterator(pool, calls)
        with pytest.raises(ExceptionGroup) as info:
            pool.terminate()
    finally:
        pool.terminate()
    assert sorted(calls) == list(range(1, 10))
    assert sorted(str(e) for e in info.value.exceptions) == ODD_ERRORS
    assert len(_robustpool_errors(caplog)) == 5
    with pytest.raises(StopIteration):
        it.next(timeout=1.0)


def test_leaving_pool_by_exception_keeps_the_users_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with pytest.raises(ConsumerError) as info, RobustPool(2) as pool:
        it = _buffered_iterator(pool, calls)
        raise ConsumerError("mine")
    assert type(info.value) is ConsumerError and str(info.value) == "mine"
    notes = getattr(info.value, "__notes__", [])
    assert any("cleanup" in note and "5" in note for note in notes), notes
    assert sorted(calls) == list(range(1, 10))
    assert len(_robustpool_errors(caplog)) == 5
    del it


def test_map_cleanup_errors_are_logged_and_noted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with RobustPool(2) as pool, pytest.raises(ValueError, match="item 13 is bad") as info:
        pool.map(_square_unless_13, range(20), 3, cleanup=functools.partial(_raise_for_odd, calls))
    assert sorted(calls) == SQUARES_BUT_13
    odd = [v for v in SQUARES_BUT_13 if v % 2]
    notes = getattr(info.value, "__notes__", [])
    assert any("cleanup" in note and str(len(odd)) in note for note in notes), notes
    assert len(_robustpool_errors(caplog)) == len(odd)
