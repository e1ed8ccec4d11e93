"""``map``: results in order, several iterables as ``zip``, chunksize, the timeout counted
from the call, an item's error at its position, lazy input, and ``cleanup=`` keeping the
promise (every computed result nobody received is cleaned exactly once) when the consumer
leaves early."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robustpool import MapIterator, RobustExecutor

from .workers import (
    FAST,
    GET,
    PROMPT,
    released,
    square,
    wait_for,
    wait_until,
    warm_up,
    write_square,
    write_square_unless,
)


def _close(results: MapIterator[Any]) -> None:
    """Leave a map early, explicitly."""
    results.close()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_map_matches_builtin_map(start_method: str) -> None:
    expected = list(map(pow, range(40), range(40)))
    with RobustExecutor(2, start_method=start_method) as executor:
        assert list(executor.map(pow, range(40), range(40))) == expected
        for chunksize in (3, 6, 40, 50):
            assert list(executor.map(pow, range(40), range(40), chunksize=chunksize)) == expected, chunksize
        assert list(executor.map(square, [])) == []
        assert list(executor.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]


def test_map_over_several_iterables_stops_at_the_shortest() -> None:
    with RobustExecutor(2, start_method=FAST) as executor:
        assert list(executor.map(pow, [2, 3, 4], [5, 6])) == [32, 729]
        assert list(executor.map(pow, range(10), itertools.repeat(2))) == [x * x for x in range(10)]
        assert list(executor.map(pow, range(100), range(3), chunksize=7)) == [1, 1, 4]
        assert list(executor.map(pow, [], range(5))) == []
        # No input at all is an empty map too (zip() of nothing).
        assert list(executor.map(square)) == []


def test_map_error_at_its_position_ends_the_iteration() -> None:
    with RobustExecutor(2, start_method=FAST) as executor:
        results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
        assert next(results) == (0, 1)
        assert next(results) == (0, 1)
        with pytest.raises(ZeroDivisionError):
            next(results)
        with pytest.raises(StopIteration):  # an error ends the iteration, as in the standard library
            next(results)
        assert executor.submit(square, 4).result(timeout=GET) == 16


def test_map_timeout_raises_for_the_item_not_ready(tmp_path: Path) -> None:
    # As CPython's test_map_timeout: two items done at once, the third not by the deadline.
    # (A short close_timeout: leaving the iteration waits that long for the running item, see
    # the xfail below.)
    ready, release = tmp_path / "ready", tmp_path / "release"
    ready.touch()
    got: list[object] = []
    with RobustExecutor(2, start_method=FAST, close_timeout=0.5) as executor, released(release):
        warm_up(executor, 2)
        t0 = time.monotonic()
        results = executor.map(wait_for, [str(ready), str(ready), str(release)], [0, 1, 2], timeout=2.0)
        with pytest.raises(TimeoutError):
            for value in results:
                got.append(value)
        elapsed = time.monotonic() - t0
        release.touch()
        assert executor.submit(square, 3).result(timeout=GET) == 9
    assert got == [0, 1]
    assert 1.95 <= elapsed < 2.0 + 0.5 + PROMPT


def test_map_timeout_is_raised_at_the_deadline_while_an_item_runs_on(tmp_path: Path) -> None:
    release = tmp_path / "release"
    elapsed = 0.0
    with RobustExecutor(1, start_method=FAST) as executor, released(release):  # close_timeout: the default, 10 s
        warm_up(executor, 1)
        t0 = time.monotonic()
        # The running item is released a little after the longest wait this test accepts.
        timer = threading.Timer(0.5 + 2.5 + 0.5, release.touch)
        timer.start()
        try:
            results = executor.map(wait_for, [str(release)], timeout=0.5)
            with pytest.raises(TimeoutError):
                next(results)
            elapsed = time.monotonic() - t0
        finally:
            timer.join(timeout=GET)
    assert elapsed < 0.5 + 2.5, f"TimeoutError after {elapsed:.1f} s for a timeout of 0.5 s"


def test_map_timeout_counts_from_the_call_not_per_item(tmp_path: Path) -> None:
    # One worker, items released one by one, each well within the timeout of 1.2 s: only a
    # deadline counted from the call can expire.
    n = 20
    paths = [tmp_path / f"release{i}" for i in range(n)]
    got: list[object] = []
    stop = threading.Event()

    def release_slowly() -> None:
        for p in paths:
            if stop.wait(0.25):
                return
            p.touch()

    with RobustExecutor(1, start_method=FAST, close_timeout=0.5) as executor:
        warm_up(executor, 1)
        releaser = threading.Thread(target=release_slowly)
        t0 = time.monotonic()
        results = executor.map(wait_for, [str(p) for p in paths], range(n), timeout=1.2)
        releaser.start()
        try:
            with pytest.raises(TimeoutError):
                for value in results:
                    got.append(value)
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            releaser.join(timeout=GET)
            for p in paths:  # the item that was running when the map closed ends now
                p.touch()
    assert got == list(range(len(got))) and len(got) <= 5
    assert 1.15 <= elapsed < 1.2 + 0.5 + PROMPT


def test_map_timeout_with_results_ready_before_the_deadline() -> None:
    with RobustExecutor(2, start_method=FAST) as executor:
        assert list(executor.map(square, range(20), timeout=GET)) == [x * x for x in range(20)]


def test_map_reads_an_endless_input_lazily() -> None:
    pulled = [0]

    def counting() -> Iterator[int]:
        for x in itertools.count():
            pulled[0] = x + 1
            yield x

    with RobustExecutor(2, start_method=FAST, buffersize=4) as executor:
        results = executor.map(square, counting())
        for x, value in zip(range(50), results, strict=False):
            assert value == x * x
            # buffersize chunks ahead of the consumer, and never the whole (endless) input
            assert pulled[0] <= x + 1 + 4 + 1, (x, pulled[0])
        _close(results)
        assert pulled[0] <= 50 + 4 + 1
        chunked = executor.map(square, counting(), chunksize=3, buffersize=2)
        assert list(itertools.islice(chunked, 10)) == [x * x for x in range(10)]
        _close(chunked)
    # Leaving the with block did not read the rest of the input either.
    assert pulled[0] <= 10 + 3 * 2 + 3


def test_map_input_is_not_read_before_the_consumer_needs_it() -> None:
    pulled = [0]

    def counting() -> Iterator[int]:
        for x in range(1000):
            pulled[0] += 1
            yield x

    with RobustExecutor(2, start_method=FAST) as executor:
        results = executor.map(square, counting(), buffersize=5)
        assert pulled[0] <= 5 + 1
        assert list(results) == [x * x for x in range(1000)]
        assert pulled[0] == 1000


class _Cleaner:
    """A ``cleanup`` that removes the result's file and counts how often each was handed over."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, path: str) -> None:
        with self.lock:
            self.counts[path] += 1
        os.remove(path)


def _leave_early_and_check(tmp_path: Path, take: int, how: str) -> None:
    cleaner = _Cleaner()
    received: list[str] = []
    with RobustExecutor(2, start_method=FAST) as executor:
        results = executor.map(write_square, itertools.repeat(str(tmp_path)), range(200), buffersize=8, cleanup=cleaner)
        for path in results:
            received.append(path)
            if len(received) == take:
                break
        if how == "close":
            _close(results)
        else:
            del results  # dropped: the generator is closed at once
        # Results still on their way when the generator closed are cleaned as they arrive.
    made = {str(p) for p in tmp_path.iterdir()}
    assert len(received) == take
    assert all(Path(p).read_text() == str(i * i) for i, p in enumerate(received))
    assert made == set(received), f"left behind: {sorted(made - set(received))}"
    assert not set(cleaner.counts) & set(received)
    assert all(n == 1 for n in cleaner.counts.values()), cleaner.counts
    # Only a window ahead was computed: the rest of the 200 items never ran.
    assert take + len(cleaner.counts) < 200


@pytest.mark.parametrize("how", ["close", "drop"])
def test_map_left_early_cleans_every_unreceived_result_once(tmp_path: Path, how: str) -> None:
    _leave_early_and_check(tmp_path, 5, how)


def test_map_closed_before_its_first_result_cleans_everything(tmp_path: Path) -> None:
    cleaner = _Cleaner()
    with RobustExecutor(2, start_method=FAST) as executor:
        results = executor.map(write_square, itertools.repeat(str(tmp_path)), range(50), buffersize=4, cleanup=cleaner)
        wait_until(lambda: any(tmp_path.iterdir()), "a first result file")
        _close(results)  # never started: nothing received, everything computed is cleaned
        # ``results`` is still referenced, as a variable is, when the with block shuts down.
    assert not list(tmp_path.iterdir())
    assert cleaner.counts and all(n == 1 for n in cleaner.counts.values())
    assert len(cleaner.counts) < 50  # what had not started when it closed never ran


def test_map_error_ends_the_iteration_and_cleans_what_follows(tmp_path: Path) -> None:
    cleaner = _Cleaner()
    received: list[str] = []
    with RobustExecutor(2, start_method=FAST) as executor:
        results = executor.map(
            write_square_unless, itertools.repeat(7), itertools.repeat(str(tmp_path)), range(40), buffersize=6, cleanup=cleaner
        )
        with pytest.raises(ValueError, match="item 7 is bad"):
            for path in results:
                received.append(path)
        assert executor.submit(square, 5).result(timeout=GET) == 25
    assert len(received) == 7
    assert {str(p) for p in tmp_path.iterdir()} == set(received)
    assert all(n == 1 for n in cleaner.counts.values()), cleaner.counts
