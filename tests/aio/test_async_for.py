"""``async for`` over ``imap`` / ``imap_unordered``.

Values come in order (``imap``) or all of them (``imap_unordered``); an item's error is
raised at its position and iteration goes on after it, as with a plain ``for``. Leaving
early keeps the cleanup promise of a plain ``for``: by ``break`` or an exception from the
loop's body, the dropped iterator is closed; by cancelling the consuming task, it is closed
at once, without waiting for the running tasks, whose results are cleaned on arrival. In
each case every computed result the consumer never received is passed to ``cleanup``
exactly once (temp files: none is left once the pool has closed).

The tests of values and errors share one pool (a module fixture, started in full before the
first test); the tests of leaving early close their own, since closing is what makes the
running tasks' results arrive (and be cleaned).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from robustpool import IMapIterator, RobustPool

from .workers import ConsumerError, Ledger, fail_on, run, square, warmed, write_square, write_square_slow_from

METHODS = ["imap", "imap_unordered"]


async def _outcomes(it: AsyncIterator[int]) -> list[int | str]:
    """Every outcome: values, and ``"error"`` where an item raised (iteration goes on)."""
    out: list[int | str] = []
    while True:
        try:
            out.append(await anext(it))
        except StopAsyncIteration:
            return out
        except ValueError as exc:
            assert "item 5 is bad" in str(exc)
            out.append("error")


@pytest.fixture(scope="module")
def pool() -> Iterator[RobustPool]:
    with RobustPool(2) as shared:
        assert shared.apply(square, (2,)) == 4
        warmed(shared)
        yield shared


def _imap(pool: RobustPool, method: str, *args: Any, **kwargs: Any) -> IMapIterator[Any]:
    imap = pool.imap if method == "imap" else pool.imap_unordered
    return imap(*args, **kwargs)


def test_async_for_values(pool: RobustPool) -> None:
    async def main() -> None:
        assert [x async for x in pool.imap(square, range(100))] == [x * x for x in range(100)]
        assert [x async for x in pool.imap(square, range(100), chunksize=7)] == [x * x for x in range(100)]
        unordered = [x async for x in pool.imap_unordered(square, range(100), chunksize=3)]
        assert sorted(unordered) == [x * x for x in range(100)]
        assert [x async for x in pool.imap(square, [])] == []
        assert [x async for x in pool.imap_unordered(square, iter([]))] == []
        # A lazy input (a generator) is read as the consumer goes.
        assert [x async for x in pool.imap(square, (i for i in range(10)))] == [i * i for i in range(10)]

    run(main())


def test_async_for_error_at_its_position_and_iteration_goes_on(pool: RobustPool) -> None:
    async def main() -> None:
        bad = functools.partial(fail_on, 5)
        ordered = await _outcomes(aiter(pool.imap(bad, range(10))))
        assert ordered == [0, 1, 4, 9, 16, "error", 36, 49, 64, 81]
        chunked = await _outcomes(aiter(pool.imap(bad, range(10), chunksize=4)))
        assert chunked == ordered  # only the failing item fails inside its chunk
        unordered = await _outcomes(aiter(pool.imap_unordered(bad, range(10))))
        assert unordered.count("error") == 1
        assert sorted(v for v in unordered if v != "error") == [0, 1, 4, 9, 16, 36, 49, 64, 81]
        # A plain async for stops at the error, which propagates as itself.
        got: list[int] = []
        with pytest.raises(ValueError, match="item 5 is bad"):
            async for x in pool.imap(bad, range(10)):
                got.append(x)
        assert got == [0, 1, 4, 9, 16]

    run(main())


@pytest.mark.parametrize("leave", ["break", "raise"])
def test_leaving_async_for_early_cleans_every_unreceived_result_once(leave: str, tmp_path: Path) -> None:
    """Four values taken from each of imap and imap_unordered (one after the other, in one
    pool), then the loop is left by ``break`` or by an exception from its body."""
    ledgers: dict[str, Ledger] = {}
    values: dict[str, list[int]] = {}

    async def consume(pool: RobustPool, method: str) -> None:
        ledger = ledgers[method]
        mapper = functools.partial(write_square, str(ledger.out), str(ledger.made))
        got = values[method]
        # The iterator is not bound to a name: leaving the loop drops it, which closes it.
        async for path in _imap(pool, method, mapper, range(1000), cleanup=ledger.cleanup):
            got.append(ledger.consume(path))
            if len(got) == 4:
                if leave == "break":
                    break
                raise ConsumerError("the consumer gives up at item 3")

    async def main() -> None:
        async with RobustPool(2) as pool:
            for method in METHODS:
                (tmp_path / method).mkdir()
                ledgers[method], values[method] = Ledger(tmp_path / method), []
                if leave == "break":
                    await consume(pool, method)
                else:
                    with pytest.raises(ConsumerError):
                        await consume(pool, method)
            # The pool closes normally (close + join), so running tasks finish: their
            # results arrive after the iterator closed and are cleaned on arrival.

    run(main())
    for method, ledger in ledgers.items():
        ledger.check()
        assert len(values[method]) == 4
        made = len(os.listdir(ledger.made))
        assert made < 1000, f"{method}: all {made} items ran: the unstarted ones were not cancelled"
    assert values["imap"] == [0, 1, 4, 9]


@pytest.mark.parametrize("method", METHODS)
def test_cancelling_the_consuming_task_closes_the_iterator_at_once(method: str, tmp_path: Path) -> None:
    """Items 0-3 are quick; from item 4 on each takes 1 s. The consumer takes four values
    and then waits in ``__anext__``, where it is cancelled: it ends at once, the running
    items finish and are cleaned on arrival, the rest never run."""
    ledger = Ledger(tmp_path)
    mapper = functools.partial(write_square_slow_from, str(ledger.out), str(ledger.made), 4, 1.0)
    values: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        four = asyncio.Event()

        async def consume(pool: RobustPool) -> None:
            # buffersize=2: only a couple of items ahead, each its own task (no batching).
            async for path in _imap(pool, method, mapper, range(1000), cleanup=ledger.cleanup, buffersize=2):
                values.append(ledger.consume(path))
                if len(values) == 4:
                    four.set()

        async with RobustPool(2) as pool:
            consumer = asyncio.create_task(consume(pool))
            await asyncio.wait_for(four.wait(), 20.0)
            await asyncio.sleep(0.2)  # in __anext__ now, waiting for item 4 or 5
            assert not consumer.done()
            cancelled_at = loop.time()
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            assert loop.time() - cancelled_at < 0.5, "cancelling should not wait for the running items"
            assert len(values) == 4
            assert os.listdir(ledger.out) == [], "nothing is held yet: the running items are still running"
            closed_at = loop.time()
        # Leaving the pool waited for the running items, whose results were cleaned.
        assert loop.time() - closed_at >= 0.2
        assert ledger.cleaned, "the items running at the cancel finished and were cleaned"

    run(main())
    ledger.check()
    if method == "imap":
        assert values == [0, 1, 4, 9]
    made = len(os.listdir(ledger.made))
    assert 4 < made <= 10, f"{made} items ran, for 4 received and a window of 2"
