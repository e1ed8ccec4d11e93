"""Batching is invisible: tiny chunksize-1 items travel together, yet fail, time out and
arrive one by one; a finished result is never held back behind a slow task."""

from __future__ import annotations

import os
import signal
import time

import pytest

from robustpool import RobustPool, TaskSerializationError, WorkerLostError


class Refuses:
    """A result that cannot be rebuilt in the owner (whose pid it is given)."""

    def __init__(self, owner: int) -> None:
        self.owner = owner

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.owner,))


def _rebuild(owner: int) -> Refuses:
    if os.getpid() == owner:
        raise ValueError("refusing to be rebuilt in the owner")
    return Refuses(owner)


def _item(arg: tuple[int, int, int]) -> object:
    x, bad, owner = arg
    return Refuses(owner) if x == bad else x


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_one_unloadable_result_fails_only_its_item(start_method: str) -> None:
    owner = os.getpid()
    with RobustPool(2, start_method=start_method) as pool:
        list(pool.imap(abs, range(2000)))  # warm up: tiny items get batched from here on
        got: list[object] = []
        it = pool.imap(_item, [(x, 404, owner) for x in range(1000)])
        for _ in range(1000):
            try:
                got.append(next(it))
            except TaskSerializationError as err:
                got.append(err)
    bad = [i for i, v in enumerate(got) if isinstance(v, TaskSerializationError)]
    assert bad == [404]
    assert "unpickling the result in the owner" in str(got[404])
    assert [v for i, v in enumerate(got) if i != 404] == [x for x in range(1000) if x != 404]


GET = 30.0


def _sleep_or_echo(x: object) -> object:
    if isinstance(x, float):
        time.sleep(x)
    return x


def test_an_item_batched_with_a_slow_neighbour_arrives_at_once() -> None:
    # The pool batches tiny chunksize-1 items; the first item's result used to travel with
    # the whole batch, so it waited for the slow item behind it.
    with RobustPool(1) as pool:
        pool.map(abs, range(5000), chunksize=1)  # warm up: tiny items get batched from here on
        t0 = time.monotonic()
        with pool.imap(_sleep_or_echo, ["fast", 3.0]) as it:
            assert it.next(timeout=GET) == "fast"
            assert time.monotonic() - t0 < 1.0
            assert it.next(timeout=GET) == 3.0


def test_a_finished_result_is_not_held_back_by_the_next_queued_task() -> None:
    # Results wait up to ~1 ms in the worker for company; the next task queued behind one
    # must not make it wait for that task's whole run.
    with RobustPool(1) as pool:
        pool.map(abs, range(5000), chunksize=1)  # tiny tasks: the pool now queues many per worker
        t0 = time.monotonic()
        fast = pool.apply_async(_sleep_or_echo, ("fast",))
        slow = pool.apply_async(_sleep_or_echo, (3.0,))
        assert fast.get(timeout=GET) == "fast"
        assert time.monotonic() - t0 < 1.0
        assert slow.get(timeout=GET) == 3.0


def test_task_timeout_applies_to_each_batched_item() -> None:
    # Five items of 0.4 s, batched by the pool into one task: each is a task of its own to
    # the user, so a 1 s task_timeout must not fire on the batch's 2 s total.
    with RobustPool(1, task_timeout=1.0) as pool:
        pool.map(abs, range(5000), chunksize=1)
        assert list(pool.imap(_sleep_or_echo, [0.4] * 5)) == [0.4] * 5


def _kill_at(arg: tuple[int, int]) -> int:
    x, bad = arg
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_death_inside_a_batch_fails_only_its_item(start_method: str) -> None:
    with RobustPool(2, start_method=start_method) as pool:
        pool.map(abs, range(5000), chunksize=1)  # tiny items get batched from here on
        got: list[object] = []
        with pool.imap(_kill_at, [(x, 300) for x in range(600)]) as it:
            for _ in range(600):
                try:
                    got.append(it.next(timeout=GET))
                except WorkerLostError as err:
                    got.append(err)
            with pytest.raises(StopIteration):
                it.next(timeout=GET)
    lost = [i for i, v in enumerate(got) if isinstance(v, WorkerLostError)]
    assert lost == [300]
    assert [v for i, v in enumerate(got) if i != 300] == [x for x in range(600) if x != 300]
