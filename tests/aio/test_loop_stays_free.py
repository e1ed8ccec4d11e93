"""Awaiting robustpool never blocks the event loop, parks no thread per awaiting call, and
wakes the loop once per burst of results rather than once per result.

Wake-ups are counted at the loop itself: a loop whose ``call_soon_threadsafe`` (the only
way another thread can wake it) counts its calls. The heartbeat (see ``workers.Heartbeat``)
forgives the stalls of the whole process, which a plain thread ticking alongside sees too.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVarTuple, Unpack

from robustpool import RobustPool

from .workers import RUN, Heartbeat, run, sleep_return, square

Ts = TypeVarTuple("Ts")


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts how often another thread woke it."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(
        self, callback: Callable[[Unpack[Ts]], object], *args: *Ts, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        self.threadsafe_calls += 1  # under the GIL; only the count's order matters
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_heartbeat_ticks_while_50_results_are_awaited_on_2_workers() -> None:
    """The loop ticks on while 50 results of ``apply_async`` are awaited, and then while
    ``async for`` waits for 12 items of 100 ms; no thread is parked per awaiting call."""

    async def main() -> None:
        async with RobustPool(2) as pool:
            assert await pool.apply_async(square, (2,)) == 4  # workers up before measuring
            delays = [0.05 + 0.15 * (i % 4) / 3 for i in range(50)]  # 50 to 200 ms
            async with Heartbeat() as hb:
                threads_before = threading.active_count()  # the heartbeat's control thread included
                results = await asyncio.gather(*(pool.apply_async(sleep_return, (d, i)) for i, d in enumerate(delays)))
            assert results == list(range(50))
            # 50 calls of 125 ms on average, on 2 workers: over 3 s of work.
            assert hb.duration >= sum(delays) / 2 * 0.9, hb.describe()
            hb.assert_free()
            assert hb.max_threads - threads_before < 10, f"{threads_before} threads before, {hb.max_threads} during"
            print(f"\n50 awaits: {hb.describe()}; threads {threads_before} before, at most {hb.max_threads} during")

            # And while async for waits for slow items.
            async with Heartbeat() as hb:
                got = [x async for x in pool.imap_unordered(sleep_return, [0.1] * 12)]
            assert got == [None] * 12
            hb.assert_free()
            print(f"async for: {hb.describe()}")

    run(main())


def _counted(main: Callable[[CountingLoop], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(loop)`` (bounded) on a CountingLoop."""
    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, CountingLoop)
        runner.run(asyncio.wait_for(main(loop), RUN))


def test_results_wake_the_loop_once_per_burst_not_once_per_result() -> None:
    """1,000 tiny results through ``async for`` over ``imap(chunksize=1)``, then 200
    awaited ``apply_async``: each result would cost one wake-up if posts were not
    coalesced (an imap also coalesces its own: it wakes its consumer once per burst)."""

    async def main(loop: CountingLoop) -> None:
        async with RobustPool(2) as pool:
            assert await pool.apply_async(square, (2,)) == 4  # workers up before counting
            before = loop.threadsafe_calls
            streamed = [x async for x in pool.imap(square, range(1000), chunksize=1)]
            imap_wakeups = loop.threadsafe_calls - before
            assert streamed == [x * x for x in range(1000)]

            before = loop.threadsafe_calls
            awaited = await asyncio.gather(*(pool.apply_async(square, (i,)) for i in range(200)))
            apply_wakeups = loop.threadsafe_calls - before
            assert awaited == [i * i for i in range(200)]

            report = f"imap: {imap_wakeups} wake-ups for 1000 results; apply_async: {apply_wakeups} for 200"
            print(f"\n{report}")
            assert imap_wakeups < 1000 / 4, report
            assert apply_wakeups < 200 / 4, report

    _counted(main)
