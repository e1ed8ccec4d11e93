"""Cancelling the asyncio task that awaits a call stops the call.

A running call's worker is killed (it is gone within a bounded wait) and replaced (the pool
keeps its size and runs new work; ``stats().replaced`` counts it as ``cancelled``), and
nothing else is disturbed: another call awaited at the same time, on the other worker,
returns its value. Through ``apply_async``, ``pool.submit``, ``executor.submit``, and
through ``asyncio.wait_for``'s timeout. A call still queued is dropped without touching a
worker. An awaited ``map_async`` with ``cleanup=`` cleans the values that arrived.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from robustpool import AsyncResult, RobustExecutor, RobustPool

from .workers import (
    Ledger,
    alive,
    awaitable,
    mark_then_sleep,
    pid_of,
    run,
    started,
    until,
    write_square_unless,
    write_square_unless_holding,
)

Facade = RobustPool | RobustExecutor

HOW = ["apply_async", "pool.submit", "executor.submit"]


def _facade(how: str) -> Facade:
    return RobustExecutor(2) if how == "executor.submit" else RobustPool(2)


def _start(facade: Facade, how: str, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    """Start ``fn(*args)`` the way ``how`` says; what comes back is awaited."""
    if how == "apply_async":
        assert isinstance(facade, RobustPool)
        return facade.apply_async(fn, args)
    return awaitable(facade.submit(fn, *args))


async def _assert_ended_cancelled(call: Awaitable[Any]) -> None:
    """The call ended cancelled; awaiting it again says so at once (an AsyncResult with
    ``concurrent.futures.CancelledError``, as its ``get()``; a future with
    ``asyncio.CancelledError``, as ``asyncio.wrap_future`` of a cancelled future does)."""
    if isinstance(call, AsyncResult):
        assert call.ready() and not call.successful()
        with pytest.raises(concurrent.futures.CancelledError):
            call.get(0)
        with pytest.raises(concurrent.futures.CancelledError):
            await call
    else:
        assert isinstance(call, concurrent.futures.Future)
        assert call.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await call


def _cancelled_count(facade: Facade) -> int:
    return dict(facade.stats().replaced).get("cancelled", 0)


async def _assert_replaced(facade: Facade, how: str, victim_pid: int) -> None:
    """The victim's worker is gone, counted as cancelled, and replaced by one that works."""
    await until(lambda: not alive(victim_pid), f"the cancelled call's worker {victim_pid} to exit", 10.0)
    await until(lambda: _cancelled_count(facade) == 1, "stats().replaced to count the cancel")
    pids: list[int] = []

    def full() -> bool:
        pids[:] = facade.worker_pids()
        return len(pids) == 2 and victim_pid not in pids

    await until(full, "the pool to be back to 2 workers")
    x, pid = await _start(facade, how, pid_of, 7)
    assert x == 7 and pid in pids and pid != victim_pid
    assert _cancelled_count(facade) == 1
    assert facade.stats().workers_alive == 2


async def _awaiting(call: Awaitable[Any]) -> Any:
    return await call


async def _both_workers_up(facade: Facade) -> None:
    # Then each of two calls gets a worker of its own (none is queued behind the other).
    await until(lambda: len(facade.worker_pids()) == 2, "both workers to start")


@pytest.mark.parametrize("how", HOW)
def test_cancelling_the_awaiting_task_kills_the_running_call(how: str, tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with _facade(how) as facade:
            await _both_workers_up(facade)
            victim = _start(facade, how, mark_then_sleep, str(tmp_path), "victim", 30.0)
            other = _start(facade, how, mark_then_sleep, str(tmp_path), "other", 1.0)
            victim_task = asyncio.create_task(_awaiting(victim))
            other_task = asyncio.create_task(_awaiting(other))
            victim_pid = await started(tmp_path, "victim")
            other_pid = await started(tmp_path, "other")
            assert victim_pid != other_pid  # one call per worker

            cancelled_at = loop.time()
            victim_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await victim_task
            assert loop.time() - cancelled_at < 1.0, "the cancelled task should end at once"
            await _assert_ended_cancelled(victim)
            assert not other_task.done()

            assert await other_task == ("other", other_pid)  # undisturbed
            assert alive(other_pid)
            await _assert_replaced(facade, how, victim_pid)

    run(main())


@pytest.mark.parametrize("how", ["apply_async", "executor.submit"])
def test_wait_for_timeout_kills_the_running_call(how: str, tmp_path: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with _facade(how) as facade:
            # The workers are up first, so the 0.3 s are the call's.
            await _both_workers_up(facade)
            await _start(facade, how, pid_of, 0)
            victim = _start(facade, how, mark_then_sleep, str(tmp_path), "victim", 30.0)
            begun = loop.time()
            waiting = asyncio.create_task(asyncio.wait_for(victim, timeout=0.3))
            victim_pid = await started(tmp_path, "victim")  # running when the timeout comes
            with pytest.raises(TimeoutError):
                await waiting
            assert loop.time() - begun < 1.5
            await _assert_ended_cancelled(victim)
            await _assert_replaced(facade, how, victim_pid)

    run(main())


@pytest.mark.parametrize("how", ["apply_async", "executor.submit"])
def test_cancelling_a_queued_call_drops_it_and_kills_nobody(how: str, tmp_path: Path) -> None:
    async def main() -> None:
        facade: Facade = RobustExecutor(1) if how == "executor.submit" else RobustPool(1)
        async with facade:
            busy = _start(facade, how, mark_then_sleep, str(tmp_path), "busy", 0.6)
            busy_pid = await started(tmp_path, "busy")
            queued = _start(facade, how, mark_then_sleep, str(tmp_path), "queued", 0.0)
            queued_task = asyncio.create_task(_awaiting(queued))
            await asyncio.sleep(0.05)
            queued_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued_task
            await _assert_ended_cancelled(queued)
            assert await busy == ("busy", busy_pid)
            # The worker that was busy ran on and takes new work.
            assert await _start(facade, how, pid_of, 1) == (1, busy_pid)
            assert _cancelled_count(facade) == 0
            if how != "apply_async":
                # A future is sent only when a worker is free for it: it never ran. (An
                # apply_async may have been queued inside the busy worker already; it then
                # runs there and its value is dropped, as _stop_job documents.)
                assert not (tmp_path / "queued").exists()

    run(main())


@pytest.mark.parametrize("chunksize", [1, 7])
def test_cancelled_map_async_cleans_the_values_that_arrived(chunksize: int, tmp_path: Path) -> None:
    """Items 0-5 make temp files; item 6 runs for 30 s. Cancelling the awaiting task once
    the six values reached the owner kills item 6's worker and passes the six values to
    ``cleanup``, once each. With chunksize 7 the whole call is one chunk, which replies
    item by item since it has a cleanup."""
    ledger = Ledger(tmp_path)
    n, slow = 7, 6

    async def main() -> None:
        async with RobustPool(2) as pool:
            mapper = functools.partial(write_square_unless, str(ledger.out), str(ledger.made), slow)
            result = pool.map_async(mapper, range(n), chunksize=chunksize, cleanup=ledger.cleanup)
            task = asyncio.create_task(_awaiting(result))
            await until(lambda: pool.stats().tasks_done >= slow, "the fast items' values to arrive")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(concurrent.futures.CancelledError):
                result.get(0)
            await until(lambda: len(ledger.cleaned) == slow, "the six values to be cleaned")
            await until(lambda: _cancelled_count(pool) == 1, "the slow item's worker to be replaced")
            x, _pid = await pool.apply_async(pid_of, (3,))
            assert x == 3

    run(main())
    ledger.check()
    assert len(ledger.cleaned) == slow


def test_cancel_right_after_items_of_a_chunk_finished_still_cleans_them(tmp_path: Path) -> None:
    """As above with one chunk of 7, but the task is cancelled as soon as items 0-5 have
    finished in the worker, while item 6 holds the worker's GIL for 0.3 s (its flusher
    cannot send them until then). Their values are owed: they must still be cleaned."""
    ledger = Ledger(tmp_path)
    n, slow = 7, 6

    async def main() -> None:
        async with RobustPool(2) as pool:
            mapper = functools.partial(write_square_unless_holding, str(ledger.out), str(ledger.made), slow, 0.3)
            result = pool.map_async(mapper, range(n), chunksize=n, cleanup=ledger.cleanup)
            task = asyncio.create_task(_awaiting(result))
            deadline = asyncio.get_running_loop().time() + 20.0
            while len(os.listdir(ledger.made)) < slow:
                assert asyncio.get_running_loop().time() < deadline, "the fast items did not finish"
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: _cancelled_count(pool) == 1, "the slow item's worker to be replaced")
            await asyncio.sleep(0.5)  # what is still on its way arrives meanwhile

    run(main())
    ledger.check()
