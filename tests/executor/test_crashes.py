"""The rest of CPython's ``test_deadlock.py``, inverted (the phase x failure rows are in
``test_crash_matrix.py``): a crash around ``shutdown``, a crash with a big argument in a
``map``, an unpicklable function; each fails its own call, promptly, and the executor (if
still open) goes on."""

from __future__ import annotations

import functools
import pickle
import signal
import threading
import time
from typing import Any

import pytest

from robustpool import RobustExecutor, TaskSerializationError, WorkerLostError

from .workers import FAST, GET, PROMPT, capture, crash_with_data, sleep_return, sleep_then_fault, square


class _PicklingFails:
    """An argument that raises ``pickle.PicklingError`` as the owner pickles it."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise pickle.PicklingError("error in pickle")


def test_crash_after_shutdown_was_called() -> None:
    # test_shutdown_deadlock: the worker dies after shutdown() began waiting.
    executor = RobustExecutor(2, start_method=FAST)
    try:
        future = executor.submit(sleep_return, 0.0)
        assert future.result(timeout=GET) is None
        crash = executor.submit(sleep_then_fault, 0.3, "segfault")
        t0 = time.monotonic()
        executor.shutdown(wait=True)
        assert time.monotonic() - t0 < GET
        err = crash.exception(timeout=0)
        assert isinstance(err, WorkerLostError) and err.signal is signal.SIGSEGV
    finally:
        executor.shutdown()


def test_unpicklable_argument_then_shutdown_without_wait() -> None:
    # test_shutdown_deadlock_pickle: the call fails with the pickling error, nothing hangs.
    executor = RobustExecutor(2, start_method=FAST)
    try:
        assert executor.submit(id, 42).result(timeout=GET) > 0
        future = executor.submit(id, _PicklingFails())
        executor.shutdown(wait=False)
        err = future.exception(timeout=GET)
        assert isinstance(err, TaskSerializationError)
        assert isinstance(err, pickle.PicklingError)  # what code written for the standard library catches
        assert "error in pickle" in str(err)
    finally:
        executor.shutdown()


def test_crash_with_big_data_fails_that_map_only() -> None:
    # test_crash_big_data (CPython issue 94777): a worker dies while a big argument is sent.
    data = b"a" * (4 * 2**20)
    with RobustExecutor(2, start_method=FAST) as executor:
        t0 = time.monotonic()
        with pytest.raises(WorkerLostError) as info:
            list(executor.map(crash_with_data, [data] * 10, timeout=GET))
        assert time.monotonic() - t0 < GET
        assert info.value.signal is signal.SIGSEGV and info.value.task_index == 0
        assert executor.submit(square, 11).result(timeout=GET) == 121
        assert list(executor.map(len, [data] * 3, timeout=GET)) == [len(data)] * 3


def test_unpicklable_function_fails_its_call() -> None:
    fn = functools.partial(capture, threading.Lock())
    with RobustExecutor(1, start_method=FAST) as executor:
        err = executor.submit(fn, 1).exception(timeout=GET)
        assert isinstance(err, TaskSerializationError) and "cannot pickle the function" in str(err)
        with pytest.raises(TaskSerializationError, match="cannot pickle the function"):
            list(executor.map(fn, [1, 2], timeout=GET))
        assert executor.submit(square, 3).result(timeout=GET) == 9


def test_many_quick_submits_do_not_block() -> None:
    # gh-105829 (the manager's wakeup pipe filled up): 1000 submits in a burst.
    with RobustExecutor(2, start_method=FAST) as executor:
        t0 = time.monotonic()
        futures = [executor.submit(int, i) for i in range(1000)]
        assert time.monotonic() - t0 < GET
        assert [f.result(timeout=GET) for f in futures] == list(range(1000))
        assert len(list(executor.map(int, range(1000), timeout=GET))) == 1000
        assert time.monotonic() - t0 < GET + PROMPT
