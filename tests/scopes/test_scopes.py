"""Scopes: leaving one waits for its tasks; a failure cancels what has not started and is
raised with the others in one ExceptionGroup; the owner's Ctrl-C is never swallowed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from robustpool import RobustExecutor, RobustPool, RobustThreadPool, RobustThreadPoolExecutor, multi_scope

from . import workers

GET = 10.0


@pytest.fixture
def pools() -> Iterator[tuple[RobustPool, RobustThreadPool]]:
    with RobustPool(2) as procs, RobustThreadPool(2) as threads:
        yield procs, threads


def test_leaving_waits_for_every_task_of_every_pool(pools: tuple[RobustPool, RobustThreadPool]) -> None:
    procs, threads = pools
    done: list[int] = []

    def record(k: int) -> None:
        time.sleep(0.01)
        done.append(k)

    with multi_scope(procs, threads) as (p, t):
        squares = [p.submit(workers.square, k) for k in range(10)]
        for k in range(10):
            t.submit(record, k)
    assert all(f.done() for f in squares)
    assert sorted(done) == list(range(10))


def test_a_failing_task_in_a_two_pool_scope_cancels_the_rest_and_is_raised(pools: tuple[RobustPool, RobustThreadPool]) -> None:
    procs, threads = pools
    ran: list[int] = []
    started = threading.Event()

    def slow(k: int) -> None:
        started.set()
        time.sleep(0.25)  # 20 of them on 2 threads: 2.5 s, far longer than the failure takes to come
        ran.append(k)

    with pytest.raises(ExceptionGroup) as info, multi_scope(procs, threads) as (p, t):
        slow_ones = [t.submit(slow, k) for k in range(20)]
        assert started.wait(GET)
        p.submit(workers.fail, "bad input")
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert str(info.value.exceptions[0]) == "bad input"
    cancelled = [f for f in slow_ones if f.cancelled()]
    assert len(cancelled) >= 10  # the rest never started ...
    assert len(ran) == 20 - len(cancelled)  # ... and the running ones were waited for (on_error="wait")


def test_on_error_stop_kills_the_running_tasks_of_a_process_pool() -> None:
    with RobustPool(2) as procs:
        began = time.monotonic()
        with pytest.raises(ExceptionGroup), procs.scope(on_error="stop") as s:
            long = s.submit(workers.sleep_then, 60.0, "never")
            workers.wait_running(procs, 1)
            s.submit(workers.fail, "stop")
        assert time.monotonic() - began < GET
        assert long.cancelled()
        assert procs.apply(workers.square, (7,)) == 49  # the pool goes on


def test_a_scope_left_by_an_exception_in_the_owner(pools: tuple[RobustPool, RobustThreadPool]) -> None:
    procs, _ = pools
    with pytest.raises(ExceptionGroup) as info, procs.scope() as s:
        futures = [s.submit(workers.sleep_then, 0.05, k) for k in range(40)]
        raise KeyError("the owner gave up")
    assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert any(f.cancelled() for f in futures)
    assert all(f.done() for f in futures)


def test_ctrl_c_in_the_owner_is_never_swallowed() -> None:
    with RobustPool(1) as procs:
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt), procs.scope() as s:
            running = s.submit(workers.sleep_then, 60.0, "never")
            queued = s.submit(workers.square, 3)
            workers.wait_running(procs, 1)
            raise KeyboardInterrupt
        assert time.monotonic() - began < GET  # not waiting for the 60 s task
        assert running.cancelled() and queued.cancelled()


def test_tasks_on_a_thread_pool_can_start_more_tasks_in_the_scope() -> None:
    seen: list[int] = []
    lock = threading.Lock()
    with RobustThreadPool(4) as threads, threads.scope() as s:

        def tree(depth: int) -> None:
            with lock:
                seen.append(depth)
            if depth < 5:
                s.submit(tree, depth + 1)
                s.submit(tree, depth + 1)

        s.submit(tree, 0)
    assert len(seen) == 2**6 - 1  # every task, including those started by tasks, was waited for


def test_after_the_end_and_after_a_failure(pools: tuple[RobustPool, RobustThreadPool]) -> None:
    _, threads = pools
    with threads.scope() as s:
        pass
    with pytest.raises(RuntimeError, match="scope has ended"):
        s.submit(abs, 1)
    with pytest.raises(ExceptionGroup), threads.scope() as s:
        s.submit(workers.fail, "first").exception(GET)
        later = s.submit(abs, -1)
        assert later.cancelled()  # nothing more starts in a failed scope


def test_imap_in_a_scope_is_closed_at_its_end_and_cleans_what_nobody_took() -> None:
    cleaned: list[int] = []
    with RobustThreadPool(2) as threads:
        with threads.scope() as s:
            it = s.imap(lambda k: k, range(100), cleanup=cleaned.append)
            assert next(it) == 0
            time.sleep(0.05)
        taken_or_cleaned = 1 + len(cleaned)
        assert 1 < taken_or_cleaned <= 100 and 0 not in cleaned
        with pytest.raises(RuntimeError, match="scope has ended"):
            s.map(abs, [-1])


def test_executors_of_both_kinds_in_one_scope() -> None:
    with RobustExecutor(2) as procs, RobustThreadPoolExecutor(3) as threads:
        with multi_scope(procs, threads) as (p, t):
            a = [p.submit(workers.square, k) for k in range(5)]
            b = t.map(str, range(5))
        assert [f.result() for f in a] == [0, 1, 4, 9, 16]
        assert b == ["0", "1", "2", "3", "4"]
        assert os.getpid() not in procs.worker_pids()


def test_bad_arguments_are_refused() -> None:
    with RobustThreadPool(1) as threads:
        bad = threads.scope(on_error="later")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="on_error must be 'wait' or 'stop'"), bad:
            pass
        with pytest.raises(TypeError, match="needs at least one pool"), multi_scope():
            pass
        with pytest.raises(TypeError, match="takes robustpool pools and executors"), multi_scope(threads, object()):  # type: ignore[arg-type]
            pass
