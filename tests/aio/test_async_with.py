"""``async with`` on RobustPool and RobustExecutor: leaving the block closes and waits in a
thread, so the event loop keeps running meanwhile; leaving it by an exception terminates a
RobustPool (a running call is killed, not waited for) and the exception propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from robustpool import PoolTerminatedError, RobustExecutor, RobustPool

from .workers import ConsumerError, Heartbeat, alive, awaitable, mark_then_sleep, run, sleep_return, started, until


async def _awaiting(call: Awaitable[Any]) -> Any:
    return await call


@pytest.mark.parametrize("facade", ["RobustPool", "RobustExecutor"])
def test_leaving_async_with_waits_for_the_work_without_blocking_the_loop(facade: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        hb = Heartbeat()
        if facade == "RobustPool":
            async with RobustPool(2) as pool:
                assert await pool.apply_async(sleep_return, (0.0, "up")) == "up"  # workers up
                call: Any = pool.apply_async(sleep_return, (0.5, "done"))
                await hb.start()
                leaving = loop.time()
        else:
            async with RobustExecutor(2) as ex:
                assert await awaitable(ex.submit(sleep_return, 0.0, "up")) == "up"
                call = ex.submit(sleep_return, 0.5, "done")
                await hb.start()
                leaving = loop.time()
        await hb.stop()
        took = loop.time() - leaving
        assert took >= 0.35, f"leaving took {took:.3f} s: it did not wait for the 0.5 s call"
        assert (call.get(0) if facade == "RobustPool" else call.result(0)) == "done"
        hb.assert_free()
        print(f"\nasync with {facade}: leaving took {took:.3f} s; {hb.describe()}")

    run(main())


def test_exception_in_async_with_terminates_the_pool_and_propagates(tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ConsumerError, match="leave by an exception"):
            async with RobustPool(2) as pool:
                long = pool.apply_async(mark_then_sleep, (str(tmp_path), "long", 30.0))
                waiter = asyncio.create_task(_awaiting(long))
                pid = await started(tmp_path, "long")
                leaving = loop.time()
                raise ConsumerError("leave by an exception")
        assert loop.time() - leaving < 10.0, "the running call was waited for instead of killed"
        with pytest.raises(PoolTerminatedError):
            await asyncio.wait_for(waiter, 10.0)  # the task awaiting it is woken with the error
        with pytest.raises(PoolTerminatedError):
            long.get(0)
        await until(lambda: not alive(pid), "the terminated pool's worker to exit", 10.0)
        with pytest.raises(ValueError, match="Pool not running"):
            pool.apply_async(sleep_return, (0.0,))

    run(main())


def test_exception_in_async_with_executor_propagates_after_shutdown() -> None:
    """As ``with ProcessPoolExecutor``: the executor shuts down (finishing what was
    submitted) and the exception propagates."""

    async def main() -> None:
        with pytest.raises(ConsumerError):
            async with RobustExecutor(2) as ex:
                fut = ex.submit(sleep_return, 0.2, "finished")
                raise ConsumerError("leave by an exception")
        assert fut.result(0) == "finished"
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(sleep_return, 0.0)

    run(main())
