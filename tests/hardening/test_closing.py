"""Ending work while it runs: an imap iterator closed from another thread, while its consumer
is blocked in ``next()`` reading a slow input, frees that consumer and leaves the pool whole
for the next imap; and ``terminate()``, or leaving the pool's ``with`` by an exception, runs
``cleanup`` for the items that a running chunk has already finished, for imap and map alike
(items 5 and 8 of the hardening brief).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robustpool import PoolTerminatedError, RobustPool

from ._support import _make_file, _square


def _slow_numbers(n: int, pause: float) -> Iterator[int]:
    for i in range(n):
        time.sleep(pause)
        yield i


# === 5. closing an imap iterator from another thread =====================================


def test_an_imap_closed_from_another_thread_leaves_the_pool_whole() -> None:
    pool = RobustPool(2)
    try:
        it = pool.imap(_square, _slow_numbers(10_000, 0.05))
        seen: list[Any] = []

        def consume() -> None:
            try:
                for value in it:
                    seen.append(value)
            except BaseException as exc:
                seen.append(exc)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        time.sleep(0.5)  # the consumer is blocked in next(), reading the slow input
        it.close()
        consumer.join(15)
        assert not consumer.is_alive(), "the consumer is still blocked after close()"
        second = pool.imap(_square, iter(range(200)))
        pool.close()
        time.sleep(1.0)
        pool.join(timeout=30)
        got: list[Any] = []
        for _ in range(200):
            try:
                got.append(second.next(timeout=10))
            except BaseException as exc:
                pytest.fail(f"the second imap delivered {len(got)} of 200, then {type(exc).__name__}: {exc}")
        assert got == [i * i for i in range(200)]
    finally:
        pool.terminate()


# === 8. terminate() cleans the finished items of a running chunk ========================


def _wait_for_items(directory: Path, items: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all((directory / f"item-{i}").exists() for i in items):
        assert time.monotonic() < deadline, f"items {items} not all made in {timeout:.0f} s: {sorted(os.listdir(directory))}"
        time.sleep(0.01)


def _left(directory: Path) -> list[str]:
    deadline = time.monotonic() + 2.0
    while (names := sorted(os.listdir(directory))) and time.monotonic() < deadline:
        time.sleep(0.02)
    return names


def test_terminate_cleans_finished_items_of_a_running_imap_chunk(tmp_path: Path) -> None:
    pool = RobustPool(2)
    try:
        it = pool.imap(functools.partial(_make_file, str(tmp_path)), range(4), chunksize=4, cleanup=os.unlink)
        _wait_for_items(tmp_path, [0, 1, 2], 20)
        pool.terminate()
        assert _left(tmp_path) == [], "terminate() left results of the running chunk uncleaned"
        with pytest.raises((PoolTerminatedError, StopIteration)):
            it.next(timeout=5)
    finally:
        pool.terminate()


def test_terminate_cleans_finished_items_of_running_map_chunks(tmp_path: Path) -> None:
    pool = RobustPool(2)
    try:
        result = pool.map_async(functools.partial(_make_file, str(tmp_path)), range(8), chunksize=4, cleanup=os.unlink)
        _wait_for_items(tmp_path, [0, 1, 2, 4, 5, 6], 20)
        pool.terminate()
        with pytest.raises(PoolTerminatedError):
            result.get(timeout=5)
        assert _left(tmp_path) == [], "terminate() left results of the running chunks uncleaned"
    finally:
        pool.terminate()


def test_an_exception_leaving_with_cleans_finished_items_of_running_chunks(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), RobustPool(2) as pool:
        pool.map_async(functools.partial(_make_file, str(tmp_path)), range(8), chunksize=4, cleanup=os.unlink)
        _wait_for_items(tmp_path, [0, 1, 2, 4, 5, 6], 20)
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the map ran
    assert _left(tmp_path) == [], "leaving `with` by an exception left results of the running chunks uncleaned"


def _touch_later(path: str) -> None:
    time.sleep(0.5)
    Path(path).touch()


def test_terminate_right_after_the_start_stops_every_task(tmp_path: Path) -> None:
    """A SIGTERM that reaches a worker while the supervisor forks it must not be lost (the
    supervisor's own handler, inherited until the worker restores the default, swallowed it,
    and the task ran to its end)."""
    paths = [tmp_path / f"task-{i}" for i in range(15)]
    for path in paths:
        # A forked supervisor starts fast, so terminate() meets the worker's own fork
        # (9 of 25 tasks ran to the end before the fix).
        pool = RobustPool(1, start_method="fork")
        pool.apply_async(_touch_later, (str(path),))
        pool.terminate()
        pool.join()
    time.sleep(0.8)  # past the tasks' 0.5 s, had any of them gone on
    assert [p.name for p in paths if p.exists()] == []
