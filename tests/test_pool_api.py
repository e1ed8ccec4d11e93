"""Behaviour tests for the ``multiprocessing.Pool`` API of RobustPool.

They follow the areas the standard library checks for its own Pool (apply, the map family,
imap, results, argument validation, lifecycle, tracebacks, initializers, worker recycling),
plus the documented robustpool differences (``with`` semantics, PoolTerminatedError,
InitializerError, per-item failures inside chunks, ``submit``). Every pool is small, every
wait is bounded, and helpers live at module level so they also work with a spawned
supervisor.
"""

from __future__ import annotations

import concurrent.futures
import functools
import operator
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from robustpool import (
    InitializerError,
    RobustPool,
)

START_METHODS = ["fork", "spawn"]
GET = 30.0  # upper bound for any result that should arrive promptly

# --------------------------------------------------------------------------------------
# Module-level helpers (importable by workers under both start methods)
# --------------------------------------------------------------------------------------


def _square(x: int) -> int:
    return x * x


def _add(a: int, b: int) -> int:
    return a + b


def _affine(x: int, scale: int = 1, offset: int = 0) -> int:
    return x * scale + offset


def _sleep_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def _slow_identity(x: float) -> float:
    time.sleep(x)
    return x


def _echo(data: bytes) -> bytes:
    return data


def _pid_of(x: int) -> tuple[int, int]:
    return x * 3, os.getpid()


def _fail_on_5(x: int) -> int:
    if x == 5:
        raise ValueError(f"item {x} is bad")
    return x * x


def _fail_on_odd_after_2(x: int) -> int:
    if x > 2 and x % 2:
        raise KeyError(f"odd item {x}")
    return x


def _raise_key_error(x: int) -> int:
    raise KeyError(f"missing {x}")


def _helper_that_raises(x: int) -> int:
    raise ValueError(f"helper refused {x}")


def _task_calling_helper(x: int) -> int:
    return _helper_that_raises(x) + 1


def _raise_system_exit(code: int) -> NoReturn:
    raise SystemExit(code)


def _raise_keyboard_interrupt() -> NoReturn:
    raise KeyboardInterrupt("stop right there")


class CustomTaskError(Exception):
    """A user exception type that must come back as itself."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


def _raise_custom(code: int) -> NoReturn:
    raise CustomTaskError(code, f"custom failure {code}")


def _refuse_to_rebuild(*args: Any) -> NoReturn:
    raise RuntimeError("this exception cannot be rebuilt")


class UnrebuildableError(Exception):
    """Pickles fine in the worker, but unpickling it in the owner raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_to_rebuild, self.args)


def _raise_unrebuildable(x: int) -> NoReturn:
    raise UnrebuildableError(f"unrebuildable {x}")


class InputBrokeError(Exception):
    """Raised by an input generator, in the owner."""


def _numbers_then_error(n: int) -> Iterator[int]:
    yield from range(n)
    raise InputBrokeError(f"input broke after {n} items")


@dataclass(frozen=True)
class Point:
    x: int
    y: int

    def manhattan(self) -> int:
        return abs(self.x) + abs(self.y)


def _shift(p: Point) -> Point:
    return Point(p.x + 1, p.y - 1)


_INIT_VALUE: str | None = None


def _set_init_value(value: str) -> None:
    global _INIT_VALUE
    _INIT_VALUE = f"{value}:{os.getpid()}"


def _read_init_value(_: int) -> tuple[str | None, int]:
    return _INIT_VALUE, os.getpid()


def _failing_initializer(marker: str) -> None:
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    raise RuntimeError("initializer exploded: database unreachable")


def _touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


# --------------------------------------------------------------------------------------
# What can be sent: lambdas, closures, partials, instances
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_lambdas_closures_partials_and_instances(start_method: str) -> None:
    offset = 1000

    def add_offset(x: int) -> int:
        return x + offset

    with RobustPool(2, start_method=start_method) as pool:
        assert pool.map(lambda x: x * 2, range(10)) == [x * 2 for x in range(10)]
        assert pool.map(add_offset, range(5)) == [1000, 1001, 1002, 1003, 1004]
        assert list(pool.imap(add_offset, range(3))) == [1000, 1001, 1002]
        assert pool.apply(lambda a, b=0: a - b, (10,), {"b": 3}) == 7
        assert pool.map(functools.partial(_affine, scale=3, offset=1), range(4)) == [1, 4, 7, 10]
        assert pool.apply(functools.partial(_add, 40), (2,)) == 42
        assert pool.map(functools.partial(operator.mul, 5), [1, 2]) == [5, 10]
        points = [Point(1, -2), Point(-3, 4)]
        assert pool.map(Point.manhattan, points) == [3, 7]
        assert pool.map(_shift, points) == [Point(2, -3), Point(-2, 3)]
        assert pool.submit(lambda p: p.manhattan(), Point(5, 5)).result(timeout=GET) == 10


# --------------------------------------------------------------------------------------
# submit / concurrent.futures
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_submit_returns_a_future(start_method: str) -> None:
    with RobustPool(2, start_method=start_method) as pool:
        fut = pool.submit(_affine, 3, scale=2, offset=1)
        assert isinstance(fut, concurrent.futures.Future)
        assert fut.result(timeout=GET) == 7
        assert fut.exception(timeout=0) is None
        assert fut.done() and not fut.cancelled()

        bad = pool.submit(_raise_key_error, 9)
        exc = bad.exception(timeout=GET)
        assert isinstance(exc, KeyError)
        with pytest.raises(KeyError):
            bad.result(timeout=0)

        futures = [pool.submit(_sleep_return, 0.05 * (i % 3), i) for i in range(8)]
        got = sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=GET))
        assert got == list(range(8))

        more = [pool.submit(_square, i) for i in range(5)]
        done, not_done = concurrent.futures.wait(more, timeout=GET)
        assert not not_done
        assert sorted(f.result() for f in done) == [0, 1, 4, 9, 16]


def test_cancelled_future_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with RobustPool(1) as pool:
        blockers = [pool.submit(_sleep_return, 0.3, i) for i in range(4)]
        target = pool.submit(_touch, str(marker))
        assert target.cancel()
        assert target.cancelled()
        assert [f.result(timeout=GET) for f in blockers] == [0, 1, 2, 3]
        # Everything queued before this has been dispatched or dropped by now.
        assert pool.submit(_square, 3).result(timeout=GET) == 9
        with pytest.raises(concurrent.futures.CancelledError):
            target.result(timeout=0)
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# Initializer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_initializer_runs_in_each_worker(start_method: str) -> None:
    with RobustPool(2, initializer=_set_init_value, initargs=("ready",), start_method=start_method) as pool:
        results = pool.map(_read_init_value, range(20), chunksize=1)
    for value, pid in results:
        assert value == f"ready:{pid}"


@pytest.mark.parametrize("processes", [1, 2])
def test_failing_initializer_breaks_the_pool_without_endless_respawn(tmp_path: Path, processes: int) -> None:
    marker = tmp_path / "init-attempts"
    with RobustPool(processes, initializer=_failing_initializer, initargs=(str(marker),)) as pool:
        r = pool.apply_async(_square, (3,))
        t0 = time.monotonic()
        with pytest.raises(InitializerError) as info:
            r.get(timeout=30)
        assert time.monotonic() - t0 < 20
        assert "initializer exploded: database unreachable" in str(info.value)
        assert "RuntimeError" in str(info.value)
        # New work fails the same way, promptly.
        with pytest.raises(InitializerError):
            pool.apply_async(_square, (4,)).get(timeout=10)
        time.sleep(0.5)
        attempts = len(marker.read_text().splitlines())
        time.sleep(0.5)
        assert len(marker.read_text().splitlines()) == attempts
        assert 3 <= attempts <= 3 + processes


# --------------------------------------------------------------------------------------
# maxtasksperchild
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_maxtasksperchild_recycles_workers(start_method: str) -> None:
    with RobustPool(2, maxtasksperchild=2, start_method=start_method) as pool:
        results = pool.map(_pid_of, range(20), chunksize=1)
        assert [x for x, _ in results] == [x * 3 for x in range(20)]
        pids = Counter(pid for _, pid in results)
        assert len(pids) > 2
        assert max(pids.values()) <= 2
        assert pool.apply(_square, (3,)) == 9


def test_maxtasksperchild_one_then_close_join_does_not_hang() -> None:
    with RobustPool(2, maxtasksperchild=1) as pool:
        results = [pool.apply_async(_square, (i,)) for i in range(6)]
        pool.close()
        pool.join()
        assert [r.get(timeout=0) for r in results] == [i * i for i in range(6)]


# --------------------------------------------------------------------------------------
# Large payloads
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_large_payload_round_trip(start_method: str) -> None:
    data = os.urandom(5 * 2**20)
    with RobustPool(1, start_method=start_method) as pool:
        assert pool.apply(_echo, (data,)) == data
        assert pool.submit(_echo, data).result(timeout=GET) == data
        back = pool.map(_echo, [data, data[:1000]])
    assert back[0] == data
    assert back[1] == data[:1000]
