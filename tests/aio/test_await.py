"""``await`` on what the pool and the executor hand back: AsyncResult (``apply_async``),
MapResult (``map_async`` / ``starmap_async``) and the futures of ``submit``, for values and
for errors (the worker's exception type, attributes and frames come through); awaiting a
result that is finished already; ``loop.run_in_executor`` with a RobustExecutor; a worker
SIGKILLed under an awaited call.

The tests that kill no worker share one pool and one executor (module fixtures, started in
full before the first test, so the leak check sees no new process), each test on its own
event loop; the tests that kill a worker have their own.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from robustpool import AsyncResult, MapResult, RobustExecutor, RobustPool, WorkerLostError

from .workers import (
    AioTaskError,
    add,
    awaitable,
    calls_helper,
    fail_on,
    kill_self,
    pid_of,
    raise_custom,
    run,
    sleep_return,
    square,
    warmed,
)


@pytest.fixture(scope="module")
def pool() -> Iterator[RobustPool]:
    with RobustPool(2) as shared:
        assert shared.apply(square, (2,)) == 4
        warmed(shared)
        yield shared


@pytest.fixture(scope="module")
def executor() -> Iterator[RobustExecutor]:
    with RobustExecutor(2) as shared:
        assert shared.submit(square, 2).result(timeout=30.0) == 4
        warmed(shared)
        yield shared


def _assert_worker_frames(exc: BaseException, x: int) -> None:
    text = "".join(traceback.format_exception(exc))
    assert f"helper refused {x}" in text
    assert "_helper_that_raises" in text
    assert "calls_helper" in text
    assert 'raise ValueError(f"helper refused {x}")' in text
    assert "workers.py" in text


# --------------------------------------------------------------------------------------
# Values and errors
# --------------------------------------------------------------------------------------


def test_await_pool_results_values(pool: RobustPool) -> None:
    async def main() -> None:
        single = pool.apply_async(add, (2, 3))
        assert isinstance(single, AsyncResult)
        assert await single == 5
        mapped = pool.map_async(square, range(20), chunksize=3)
        assert isinstance(mapped, MapResult)
        assert await mapped == [x * x for x in range(20)]
        assert await pool.starmap_async(add, [(i, 10 * i) for i in range(7)]) == [11 * i for i in range(7)]
        assert await pool.map_async(square, []) == []
        assert await awaitable(pool.submit(add, 4, b=5)) == 9
        # Many at once, gathered: each its own value.
        assert await asyncio.gather(*(pool.apply_async(square, (i,)) for i in range(30))) == [i * i for i in range(30)]

    run(main())


def test_await_executor_submit_values(executor: RobustExecutor) -> None:
    async def main() -> None:
        assert await awaitable(executor.submit(add, 1, 2)) == 3
        futures = [awaitable(executor.submit(square, i)) for i in range(10)]
        assert await asyncio.gather(*futures) == [i * i for i in range(10)]

    run(main())


def test_await_raises_the_call_error_with_worker_traceback(pool: RobustPool, executor: RobustExecutor) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="helper refused 3") as applied:
            await pool.apply_async(calls_helper, (3,))
        _assert_worker_frames(applied.value, 3)
        with pytest.raises(ValueError, match="helper refused 4") as mapped:
            await pool.map_async(calls_helper, [4])
        _assert_worker_frames(mapped.value, 4)
        with pytest.raises(ValueError, match="helper refused 5") as submitted:
            await awaitable(pool.submit(calls_helper, 5))
        _assert_worker_frames(submitted.value, 5)
        with pytest.raises(ValueError, match="helper refused 6") as executed:
            await awaitable(executor.submit(calls_helper, 6))
        _assert_worker_frames(executed.value, 6)

        # The type and its attributes survive the trip.
        with pytest.raises(AioTaskError) as custom:
            await pool.apply_async(raise_custom, (17,))
        assert type(custom.value) is AioTaskError and custom.value.code == 17
        with pytest.raises(AioTaskError) as custom_future:
            await awaitable(executor.submit(raise_custom, 18))
        assert custom_future.value.code == 18

        # map_async / starmap_async: the first error, after every item is done.
        with pytest.raises(ValueError, match="item 5 is bad"):
            await pool.map_async(functools.partial(fail_on, 5), range(12), chunksize=2)
        with pytest.raises(ValueError, match="item 2 is bad"):
            await pool.starmap_async(fail_on, [(2, i) for i in range(4)])

        # An error leaves the pool working.
        assert await pool.apply_async(square, (9,)) == 81

    run(main())


def test_await_a_finished_result_returns_at_once(pool: RobustPool) -> None:
    async def main() -> None:
        single = pool.apply_async(square, (6,))
        mapped = pool.map_async(square, range(4))
        failed = pool.apply_async(raise_custom, (3,))
        future = pool.submit(square, 7)
        for r in (single, mapped, failed):
            r.wait(20.0)
            assert r.ready()
        future.result(timeout=20.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(2):  # and again: awaiting does not consume the result
            assert await single == 36
            assert await mapped == [0, 1, 4, 9]
            assert await awaitable(future) == 49
            with pytest.raises(AioTaskError):
                await failed
        assert loop.time() - start < 0.5
        assert single.get(0) == 36  # still there for get()

    run(main())


def test_two_tasks_await_the_same_result(pool: RobustPool) -> None:
    async def main() -> None:
        shared = pool.apply_async(sleep_return, (0.3, "shared"))

        async def waiter() -> str:
            return str(await shared)

        assert list(await asyncio.gather(waiter(), waiter(), waiter())) == ["shared"] * 3

    run(main())


def test_shielded_await_leaves_the_call_running(pool: RobustPool) -> None:
    """``asyncio.shield``: cancelling the outer task does not reach the call."""

    async def main() -> None:
        call = pool.apply_async(sleep_return, (0.4, "kept"))

        async def shielded() -> Any:
            return await asyncio.shield(call)

        task = asyncio.create_task(shielded())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await call == "kept"

    run(main())


def test_event_loops_in_three_threads_await_the_same_pool(pool: RobustPool) -> None:
    """Each loop has its own waker; results go to the loop that awaits them."""
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def thread(k: int) -> None:
        async def main() -> list[int]:
            return list(await asyncio.gather(*(pool.apply_async(square, (100 * k + i,)) for i in range(50))))

        try:
            results[k] = run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    assert not errors, errors
    assert results == {k: [(100 * k + i) ** 2 for i in range(50)] for k in range(3)}


# --------------------------------------------------------------------------------------
# loop.run_in_executor
# --------------------------------------------------------------------------------------


def test_run_in_executor_20_calls(executor: RobustExecutor) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(executor, pid_of, i) for i in range(20)))
        assert [x for x, _ in results] == list(range(20))
        pids = {pid for _, pid in results}
        assert os.getpid() not in pids  # they ran in workers, not in a thread of ours
        assert await loop.run_in_executor(executor, add, 20, 22) == 42
        with pytest.raises(AioTaskError) as info:
            await loop.run_in_executor(executor, raise_custom, 5)
        assert info.value.code == 5

    run(main())


# --------------------------------------------------------------------------------------
# A worker killed under an awaited call
# --------------------------------------------------------------------------------------


def test_sigkilled_worker_fails_the_awaited_call_and_the_pool_goes_on() -> None:
    async def main() -> None:
        async with RobustPool(2) as pool:
            bystander = pool.apply_async(sleep_return, (0.5, "bystander"))
            with pytest.raises(WorkerLostError) as applied:
                await pool.apply_async(kill_self)
            assert applied.value.signal is signal.SIGKILL
            with pytest.raises(WorkerLostError) as submitted:
                await awaitable(pool.submit(kill_self))
            assert submitted.value.signal is signal.SIGKILL
            assert await bystander == "bystander"
            assert await pool.map_async(square, range(10)) == [x * x for x in range(10)]
            assert pool.stats().workers_replaced >= 2

    run(main())


def test_sigkilled_worker_fails_the_awaited_executor_future() -> None:
    async def main() -> None:
        async with RobustExecutor(2) as ex:
            with pytest.raises(WorkerLostError) as info:
                await awaitable(ex.submit(kill_self))
            assert info.value.signal is signal.SIGKILL
            assert await awaitable(ex.submit(square, 12)) == 144

    run(main())
