"""A pool an event loop can await: results, async for, cancellation that stops the work.

A heartbeat task ticks every 10 ms throughout, to show that nothing here blocks the event
loop. Run it:

    python docs/examples/asyncio_pool.py
"""

from __future__ import annotations

import asyncio
import time

from robustpool import RobustPool


def square(x: int) -> int:
    return x * x


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def heartbeat(gaps: list[float]) -> None:
    last = time.monotonic()
    while True:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


async def main() -> None:
    gaps: list[float] = []
    beat = asyncio.create_task(heartbeat(gaps))
    async with RobustPool(2) as pool:
        print("apply_async:", await pool.apply_async(square, (7,)))
        print("map_async:", await pool.map_async(square, range(5)))
        print("submit:", await pool.submit(square, 9))
        started = time.monotonic()
        many = await asyncio.gather(*(pool.apply_async(slow, (0.05,)) for _ in range(50)))
        print(f"50 awaited at once: {len(many)} results in {time.monotonic() - started:.1f} s on 2 workers")

        squares = []
        async for value in pool.imap(square, range(10)):
            squares.append(value)
        print("async for:", squares)

        # Cancelling the task that awaits a running call stops it: its worker is killed
        # and replaced, and the pool goes on.
        try:
            await asyncio.wait_for(pool.apply_async(slow, (60,)), timeout=0.5)
        except TimeoutError:
            print("wait_for timed out; the 60 s task was stopped")
        print("the pool goes on:", await pool.apply_async(square, (12,)))
    beat.cancel()
    print(f"heartbeat: {len(gaps)} ticks, the longest gap {max(gaps) * 1000:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
