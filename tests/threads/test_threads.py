"""What is particular to the thread facades: objects by reference, refusals, terminate
without stopping threads, initializer failures, the size of the pool."""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from concurrent.futures import as_completed
from typing import Any

import pytest

from robustpool import InitializerError, PoolTerminatedError, RobustThreadPool, RobustThreadPoolExecutor

GET = 10.0


def test_the_seed_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with RobustThreadPool() as pool:
        for r in pool.imap(lambda n: n * 2, [1, 2, 3, 4, 5]):
            print(r)
    assert capsys.readouterr().out == "2\n4\n6\n8\n10\n"


def test_objects_pass_by_reference_and_need_no_pickling() -> None:
    lock = threading.Lock()  # cannot be pickled
    box: list[int] = []
    with RobustThreadPool(2) as pool:
        assert pool.apply(lambda o: o, (lock,)) is lock
        pool.map(box.append, range(5))
        assert pool.submit(id, box).result(GET) == id(box)
    assert sorted(box) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("task_timeout", 1.0, "a running call cannot be stopped"),
        ("memory_limit", "1GB", "threads share one process's memory"),
        ("maxtasksperchild", 3, "threads are not recycled"),
        ("retries", 1, "a task cannot kill its worker"),
    ],
)
def test_what_needs_a_process_is_refused_at_construction(option: str, value: Any, why: str) -> None:
    with pytest.raises(ValueError, match=f"{option} needs workers that are processes.*{why}.*use RobustPool"):
        RobustThreadPool(2, **{option: value})


def test_a_per_call_task_timeout_is_refused_at_the_call() -> None:
    with RobustThreadPool(1) as pool:
        with pytest.raises(ValueError, match="task_timeout needs workers that are processes"):
            pool.apply_async(abs, (1,), task_timeout=1.0)
        assert pool.apply(abs, (-1,)) == 1


def test_an_error_keeps_a_traceback_that_starts_in_the_users_function() -> None:
    def fails(x: int) -> int:
        raise KeyError(x)

    with RobustThreadPool(1) as pool, pytest.raises(KeyError) as info:
        pool.apply(fails, (7,))
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "fails"
    assert not any("_threads" in f.filename for f in frames[:-1] if f.name == "_call")


def test_never_more_threads_at_once_than_the_pools_size() -> None:
    lock = threading.Lock()
    now = peak = 0

    def work(x: int) -> int:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.005)
        with lock:
            now -= 1
        return threading.get_ident()

    with RobustThreadPool(3) as pool:
        idents = pool.map(work, range(60), chunksize=1)
    assert peak == 3
    assert len(set(idents)) == 3


def test_terminate_fails_a_running_call_at_once_and_cleans_its_late_value() -> None:
    release = threading.Event()
    cleaned: list[str] = []

    def slow(x: int) -> str:
        if x == 0:
            release.wait(GET)
        return f"value-{x}"

    pool = RobustThreadPool(1)
    it = pool.imap(slow, range(3), cleanup=cleaned.append)
    gathered = pool.map_async(slow, [0], cleanup=cleaned.append)
    single = pool.apply_async(slow, (0,))
    time.sleep(0.05)  # item 0 of the imap is running; the rest wait behind it
    began = time.monotonic()
    pool.terminate()
    pool.join(GET)
    assert time.monotonic() - began < 1.0  # not waiting for the running call
    for result in (gathered, single):
        with pytest.raises(PoolTerminatedError):
            result.get(GET)
    assert list(it) == []
    release.set()  # the running call ends now: its value reaches nobody, so it is cleaned
    deadline = time.monotonic() + GET
    while not cleaned and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert cleaned == ["value-0"]  # the imap's item 0, once; nothing else ever ran


def test_an_initializer_failing_breaks_the_pool_after_three_fresh_threads() -> None:
    calls: list[int] = []

    def init() -> None:
        calls.append(1)
        raise RuntimeError("no database")

    pool = RobustThreadPool(2, init)
    try:
        result = pool.apply_async(abs, (1,))
        with pytest.raises(InitializerError, match="no database"):
            result.get(GET)
        time.sleep(0.05)
        assert len(calls) == 3  # three in a row, then no more: no endless restart loop
        with pytest.raises(InitializerError):
            pool.apply(abs, (1,))
    finally:
        pool.terminate()
        pool.join(GET)


def test_the_executor_runs_futures_and_cannot_cancel_a_running_one() -> None:
    started = threading.Event()
    release = threading.Event()

    def blocker() -> str:
        started.set()
        release.wait(GET)
        return "done"

    with RobustThreadPoolExecutor(max_workers=1, thread_name_prefix="robustpool-thread-x") as ex:
        running = ex.submit(blocker)
        queued = ex.submit(abs, -3)
        assert started.wait(GET)
        assert running.cancel() is False  # as ThreadPoolExecutor: a running thread cannot be stopped
        assert queued.cancel() is True
        release.set()
        assert running.result(GET) == "done"
        futures = [ex.submit(pow, 2, k) for k in range(10)]
        assert sorted(f.result() for f in as_completed(futures, GET)) == [2**k for k in range(10)]
        assert threading.current_thread().name not in ("robustpool-thread-x-1",)
    assert queued.cancelled()


def test_the_executor_defaults_to_the_standard_librarys_size() -> None:
    import os

    with RobustThreadPoolExecutor() as ex:
        assert ex.max_workers == min(32, (os.cpu_count() or 1) + 4)
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        RobustThreadPoolExecutor(0)


def test_terminate_cleans_the_late_value_of_a_running_map_async() -> None:
    release = threading.Event()
    cleaned: list[str] = []

    def slow(x: int) -> str:
        release.wait(GET)
        return f"value-{x}"

    pool = RobustThreadPool(2)
    result = pool.map_async(slow, [0, 1], chunksize=1, cleanup=cleaned.append)
    time.sleep(0.05)  # both items are running
    pool.terminate()
    with pytest.raises(PoolTerminatedError):
        result.get(GET)
    release.set()
    deadline = time.monotonic() + GET
    while len(cleaned) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)
    assert sorted(cleaned) == ["value-0", "value-1"]
    pool.join(GET)


def test_thread_pool_results_are_awaitable_and_async_iterable() -> None:
    import asyncio

    async def main() -> tuple[int, list[int], list[int], int]:
        async with RobustThreadPool(2) as pool:
            one = await pool.apply_async(pow, (2, 5))
            many = await pool.map_async(abs, [-1, -2, -3])
            streamed = [x async for x in pool.imap(lambda k: k * k, range(5))]
            future = await pool.submit(len, "four")
        return one, many, streamed, future

    assert asyncio.run(main()) == (32, [1, 2, 3], [0, 1, 4, 9, 16], 4)


def test_the_thread_executors_own_surface() -> None:
    from concurrent.futures import TimeoutError as FuturesTimeout

    release = threading.Event()
    with RobustThreadPoolExecutor(max_workers=1) as ex:
        it = ex.map(lambda x: (release.wait(GET), x)[1], range(3), timeout=0.2)
        with pytest.raises(FuturesTimeout):
            next(it)  # the timeout counts from the call, as in the standard library
        release.set()
        cleaned: list[int] = []
        lazy = ex.map(abs, range(-50, 0), cleanup=cleaned.append)
        assert next(lazy) == 50
        lazy.close()  # what ran and nobody took is cleaned
        assert 50 not in cleaned and len(set(cleaned)) == len(cleaned)
        blocker = threading.Event()
        running = ex.submit(blocker.wait, GET)
        queued = [ex.submit(abs, -k) for k in range(5)]
        time.sleep(0.05)
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            ex.submit(abs, 1)
        blocker.set()
        assert running.result(GET) is True


def test_many_submitters_lose_nothing_and_terminate_strands_nothing() -> None:
    # Submitting never waits for the engine's lock once every thread is up: each chunk
    # must still run exactly once, or fail at terminate(), never wait forever.
    from concurrent.futures import Future

    pool = RobustThreadPool(2)
    futures: list[list[Future[int]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def submitter(mine: list[Future[int]]) -> None:
        k = 0
        while not stop.is_set() and k < 20_000:
            try:
                mine.append(pool.submit(abs, -k))
            except ValueError:  # Pool not running: terminate() came
                return
            k += 1

    threads = [threading.Thread(target=submitter, args=(mine,)) for mine in futures]
    for t in threads:
        t.start()
    time.sleep(0.2)
    pool.terminate()
    stop.set()
    for t in threads:
        t.join(GET)
    every = [f for mine in futures for f in mine]
    assert len(every) > 1000
    ended = 0
    for f in every:
        with contextlib.suppress(PoolTerminatedError):
            f.result(GET)  # a stranded chunk would time out here
        ended += 1
    assert ended == len(every)
    assert sum(1 for mine in futures for k, f in enumerate(mine) if f.exception() is None and f.result() != k) == 0
    pool.join(GET)
