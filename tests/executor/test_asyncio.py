"""The executor under asyncio: ``loop.run_in_executor``, ``await`` on a submitted future,
``async with``; cancelling the awaiting side stops the running call (its worker is killed and replaced)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from robustpool import RobustExecutor, WorkerLostError

from .workers import FAST, GET, PROMPT, mul, released, sigkill_self, square, wait_for, wait_until


def test_run_in_executor() -> None:
    async def main(executor: RobustExecutor) -> None:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(executor, mul, 6, 7) == 42
        results = await asyncio.wait_for(asyncio.gather(*(loop.run_in_executor(executor, square, i) for i in range(10))), GET)
        assert results == [i * i for i in range(10)]
        with pytest.raises(ZeroDivisionError):
            await asyncio.wait_for(loop.run_in_executor(executor, divmod, 1, 0), GET)
        with pytest.raises(WorkerLostError):
            await asyncio.wait_for(loop.run_in_executor(executor, sigkill_self), GET)
        assert await asyncio.wait_for(loop.run_in_executor(executor, square, 5), GET) == 25

    with RobustExecutor(2, start_method=FAST) as executor:
        asyncio.run(main(executor))


def test_await_a_future_and_async_with() -> None:
    async def main() -> None:
        async with RobustExecutor(2, start_method=FAST) as executor:
            assert await executor.submit(mul, 3, 5) == 15
            with pytest.raises(ZeroDivisionError):
                await executor.submit(divmod, 1, 0)
            future = executor.submit(square, 4)
            assert await asyncio.wait_for(asyncio.wrap_future(future), GET) == 16

    asyncio.run(main())


def test_a_timed_out_run_in_executor_stops_the_running_call(tmp_path: Path) -> None:
    async def main(executor: RobustExecutor) -> None:
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(executor, wait_for, str(tmp_path / "never"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call, 1.0)

    with RobustExecutor(1, start_method=FAST) as executor, released(tmp_path / "never"):
        asyncio.run(main(executor))
        # Cancelling the asyncio future cancelled the RobustFuture, which killed its worker.
        wait_until(lambda: dict(executor.stats().replaced).get("cancelled") == 1, "the worker to be killed", timeout=PROMPT)
        assert executor.submit(square, 9).result(timeout=GET) == 81


def test_cancelling_the_task_that_awaits_a_future_cancels_it(tmp_path: Path) -> None:
    async def main(executor: RobustExecutor) -> None:
        future = executor.submit(wait_for, str(tmp_path / "never"))
        await asyncio.to_thread(wait_until, future.running, "the call to start")

        async def waiter() -> object:
            return await future

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert future.cancelled()

    with RobustExecutor(1, start_method=FAST) as executor, released(tmp_path / "never"):
        asyncio.run(main(executor))
        wait_until(lambda: dict(executor.stats().replaced).get("cancelled") == 1, "the worker to be killed", timeout=PROMPT)
        assert executor.submit(square, 8).result(timeout=GET) == 64
