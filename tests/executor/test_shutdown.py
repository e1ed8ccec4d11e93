"""``shutdown``: after CPython's ``test_shutdown.py``: new work refused, outstanding work
finished (``wait=True``, ``with``, a dropped executor), ``wait=False`` returning at once,
``cancel_futures=True`` cancelling what has not started (waking its waiters) while the
running calls finish."""

from __future__ import annotations

import gc
import itertools
import threading
import time
from concurrent.futures import ALL_COMPLETED, CancelledError, wait
from pathlib import Path

import pytest

from robustpool import RobustExecutor

from .workers import (
    FAST,
    GET,
    PROMPT,
    mul,
    process_gone,
    sleep_return,
    square,
    wait_for,
    wait_until,
    warm_up,
    write_square,
)


def test_submit_and_map_after_shutdown_raise_runtime_error() -> None:
    executor = RobustExecutor(1, start_method=FAST)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(pow, 2, 5)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.map(square, range(3))
    with pytest.raises(RuntimeError), executor:
        pass
    executor.shutdown()  # again: harmless
    executor.shutdown(wait=False, cancel_futures=True)


def test_shutdown_waits_for_every_submitted_future() -> None:
    # CPython issue #12364: shutdown() right after many submits must not hang.
    executor = RobustExecutor(2, start_method=FAST)
    futures = [executor.submit(sleep_return, 0.01, i) for i in range(50)]
    executor.shutdown()
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == list(range(50))


def test_with_block_waits_and_then_the_workers_are_gone() -> None:
    with RobustExecutor(2, start_method=FAST) as executor:
        pids = warm_up(executor, 2)
        futures = [executor.submit(sleep_return, 0.2, i) for i in range(6)]
        assert list(executor.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == list(range(6))
    assert executor.worker_pids() == []
    # The workers have quit; their processes end just after (their teardown is not waited for).
    wait_until(lambda: all(process_gone(pid) for pid in pids), "the workers' processes to end")


def test_shutdown_without_wait_returns_at_once_and_the_work_still_finishes(tmp_path: Path) -> None:
    release = tmp_path / "release"
    executor = RobustExecutor(2, start_method=FAST)
    try:
        warm_up(executor, 2)
        running = executor.submit(wait_for, str(release), "finished")
        queued = [executor.submit(mul, i, i) for i in range(10)]
        results = executor.map(abs, range(-5, 5))
        wait_until(running.running, "the blocking task to start")
        t0 = time.monotonic()
        executor.shutdown(wait=False)
        assert time.monotonic() - t0 < PROMPT
        assert not running.done()
        with pytest.raises(RuntimeError):
            executor.submit(square, 1)
        release.touch()
        assert running.result(timeout=GET) == "finished"
        assert [f.result(timeout=GET) for f in queued] == [i * i for i in range(10)]
        assert list(results) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    finally:
        release.touch()
        executor.shutdown(wait=True)


def test_a_lazy_map_still_owes_its_input_after_shutdown() -> None:
    # The standard library's map submits everything at the call; a lazy map must still
    # deliver every item after shutdown, however little of the input it had read.
    for wait_for_workers in (True, False):
        executor = RobustExecutor(2, start_method=FAST)
        try:
            results = executor.map(square, range(300), buffersize=2)
            executor.shutdown(wait=wait_for_workers)
            assert list(results) == [x * x for x in range(300)], wait_for_workers
        finally:
            executor.shutdown()


def test_dropped_executor_finishes_what_was_submitted() -> None:
    executor = RobustExecutor(2, start_method=FAST)
    pids = warm_up(executor, 2)
    futures = [executor.submit(square, i) for i in range(10)]
    results = executor.map(abs, range(-5, 5))
    del executor
    gc.collect()
    assert [f.result(timeout=GET) for f in futures] == [i * i for i in range(10)]
    assert list(results) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    wait_until(lambda: all(process_gone(pid) for pid in pids), "the dropped executor's workers to exit")


def test_shutdown_cancel_futures_cancels_the_pending_and_wakes_their_waiters(tmp_path: Path) -> None:
    release, out = tmp_path / "release", tmp_path / "out"
    out.mkdir()
    executor = RobustExecutor(1, start_method=FAST)
    try:
        warm_up(executor, 1)
        running = executor.submit(wait_for, str(release), "running finished")
        wait_until(running.running, "the blocking task to start")
        pending = [executor.submit(write_square, str(out), i) for i in range(30)]
        woke: list[float] = []

        def waiter() -> None:
            wait(pending, timeout=GET, return_when=ALL_COMPLETED)
            woke.append(time.monotonic())

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        executor.shutdown(wait=False, cancel_futures=True)
        thread.join(PROMPT)
        assert woke and woke[0] - t0 < PROMPT, "the waiter on the pending futures did not wake"
        assert all(f.cancelled() for f in pending)
        for f in pending:
            with pytest.raises(CancelledError):
                f.result(timeout=0)
        assert running.running() and not running.done()  # a running call is left to finish
        release.touch()
        assert running.result(timeout=GET) == "running finished"
        executor.shutdown(wait=True)
    finally:
        release.touch()
        executor.shutdown()
    assert not list(out.iterdir())  # no cancelled future ever ran


def test_shutdown_cancel_futures_with_many_short_tasks() -> None:
    # As CPython's test_cancel_futures: some were cancelled, the rest finished without error.
    executor = RobustExecutor(2, start_method=FAST)
    futures = [executor.submit(sleep_return, 0.1, i) for i in range(50)]
    wait_until(lambda: any(f.running() or f.done() for f in futures), "a first task to start")
    executor.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    others = [f for f in futures if not f.cancelled()]
    assert len(cancelled) > 20
    assert others
    for f in others:
        assert f.done()
        assert f.exception(timeout=0) is None


def test_shutdown_cancel_futures_closes_live_maps(tmp_path: Path) -> None:
    cleaned: list[str] = []
    executor = RobustExecutor(2, start_method=FAST)
    try:
        results = executor.map(write_square, itertools.repeat(str(tmp_path)), range(100), buffersize=4, cleanup=cleaned.append)
        first = next(results)
        executor.shutdown(cancel_futures=True)
        assert list(results) == []
    finally:
        executor.shutdown()
    made = {str(p) for p in tmp_path.iterdir()}
    assert made == {first, *cleaned}
    assert len(cleaned) == len(set(cleaned))


def test_cancelled_future_right_before_shutdown_does_not_hang() -> None:
    # CPython issue #94440.
    executor = RobustExecutor(1, start_method=FAST)
    try:
        assert executor.submit(int).result(timeout=GET) == 0
        executor.submit(int).cancel()
        t0 = time.monotonic()
        executor.shutdown(wait=True)
        assert time.monotonic() - t0 < PROMPT
    finally:
        executor.shutdown()


def test_shutdown_with_an_unconsumed_map() -> None:
    # CPython issue #12456: more items than workers, never consumed, then shutdown.
    executor = RobustExecutor(2, start_method=FAST)
    executor.map(str, [2] * 3)
    executor.shutdown()
