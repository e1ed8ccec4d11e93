"""The "imap that never leaks" contract (DESIGN.md, "imap cleanup contract").

``cleanup(result)`` runs exactly once, in the owner, for every result that was computed but
never handed to the consumer -- on ``close()``, leaving ``with``, garbage collection,
``terminate()`` or leaving the pool's ``with`` by an exception. Input is read lazily;
an input error surfaces at its position; inside a chunk only the failing (or killed) item
fails; cleanup errors never stop the other cleanups and are never silently dropped; Ctrl-C
in the owner leaves no process and no delivered file behind.

Real processes and signals, no mocks. Every wait is bounded. Helpers are module-level so a
spawned supervisor can import them.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustpool import IMapIterator, RobustPool, WorkerLostError
from robustpool._jobs._stream import _BYTES_AHEAD

_T = TypeVar("_T")

GET = 30.0  # bound for any result that should arrive promptly
PIPELINE_N = 1000
SIGINT_OWNER = Path(__file__).resolve().parent / "_sigint_owner.py"

# --------------------------------------------------------------------------------------
# Module-level helpers (run in workers, or in the owner as cleanups)
# --------------------------------------------------------------------------------------


class ConsumerError(Exception):
    """Raised by a test's consumer to leave the ``with`` blocks by an exception."""


def _write_square(directory: str, x: int) -> str:
    """The pipeline's mapper: ``x*x`` into a fresh temp file; returns its path."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=f"sq{x:04d}-")
    with os.fdopen(fd, "w") as f:
        f.write(str(x * x))
    return path


def _consume(path: str) -> int:
    """The pipeline's consumer: read the file, delete it, return its number."""
    with open(path) as f:
        value = int(f.read())
    os.unlink(path)
    return value


def _identity(x: int) -> int:
    return x


def _square(x: int) -> int:
    return x * x


def _kill_self() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)
    raise AssertionError("SIGKILL did not kill the worker")


def _fail_at_6(x: int) -> int:
    if x == 6:
        raise ValueError(f"item {x} is bad")
    return x * x


def _kill_at_6(x: int) -> int:
    if x == 6:
        _kill_self()
    return x * x


def _square_unless_13(x: int) -> int:
    if x == 13:
        raise ValueError("item 13 is bad")
    return x * x


def _mul_unless_13(a: int, b: int) -> int:
    if a == 13:
        raise ValueError("item 13 is bad")
    return a * b


def _slow_unless_0(x: int) -> int:
    time.sleep(0.4 if x else 0.0)
    return x


def _raise_for_odd(calls: list[int], value: int) -> None:
    calls.append(value)
    if value % 2:
        raise RuntimeError(f"cannot clean {value}")


def _slow_raising_cleanup(calls: list[int], value: int) -> None:
    time.sleep(0.2)
    calls.append(value)
    raise RuntimeError(f"cannot clean {value}")


def _token_task(marker_dir: str, fails: frozenset[int], kill: int | None, x: int) -> int:
    """Hypothesis mapper: returns the token ``x``; raises for ``fails``; SIGKILLs its
    worker for ``kill``. A completed run leaves ``ran-X-PID``; a killer leaves
    ``killer-PID`` first, so runs lost with a killed worker can be told apart."""
    if x == kill:
        Path(marker_dir, f"killer-{os.getpid()}").touch()
        _kill_self()
    if x in fails:
        raise ValueError(x)
    Path(marker_dir, f"ran-{x}-{os.getpid()}").touch()
    return x


def _marked_slow(marker_dir: str, x: int) -> int:
    """Leaves ``started-X`` when it starts, then takes 0.5 s."""
    Path(marker_dir, f"started-{x}").touch()
    time.sleep(0.5)
    return x


def _started(marker_dir: Path) -> set[int]:
    return {int(name.split("-")[1]) for name in os.listdir(marker_dir) if name.startswith("started-")}


def _counting(counter: list[int], source: Iterable[_T]) -> Iterator[_T]:
    """Yield from ``source``, counting in ``counter[0]`` how many items were pulled."""
    for x in source:
        counter[0] += 1
        yield x


def _raising_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise ValueError(f"input broke after {n} items")


def _bounded(it: IMapIterator[Any], timeout: float = GET) -> Iterator[Any]:
    """Iterate ``it`` with a bounded wait for every result."""
    while True:
        try:
            value = it.next(timeout=timeout)
        except StopIteration:
            return
        yield value


def _robustpool_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "robustpool" and r.levelno >= logging.ERROR]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------------
# 1. The temp-file pipeline
# --------------------------------------------------------------------------------------

PIPELINES = [pytest.param("imap", 1, id="imap"), pytest.param("imap_unordered", 4, id="imap_unordered-chunksize4")]


@pytest.mark.parametrize(("method", "chunksize"), PIPELINES)
def test_pipeline_consumer_raises_no_temp_file_left(tmp_path: Path, method: str, chunksize: int) -> None:
    values: list[int] = []
    mapper = functools.partial(_write_square, str(tmp_path))
    with pytest.raises(ConsumerError), RobustPool(2) as pool:
        imap = getattr(pool, method)
        with imap(mapper, range(PIPELINE_N), chunksize, cleanup=os.unlink) as it:
            for i, path in enumerate(_bounded(it)):
                values.append(_consume(path))
                if i == 3:
                    raise ConsumerError("the consumer gives up at item 3")
    assert os.listdir(tmp_path) == []
    assert len(values) == 4
    if method == "imap":
        assert values == [0, 1, 4, 9]
    else:
        assert len(set(values)) == 4 and all(round(v**0.5) ** 2 == v for v in values)


@pytest.mark.parametrize(("method", "chunksize"), PIPELINES)
def test_pipeline_consumer_breaks_no_temp_file_left(tmp_path: Path, method: str, chunksize: int) -> None:
    total = 0
    mapper = functools.partial(_write_square, str(tmp_path))
    with RobustPool(2) as pool:
        imap = getattr(pool, method)
        with imap(mapper, range(PIPELINE_N), chunksize, cleanup=os.unlink) as it:
            for i, path in enumerate(_bounded(it)):
                total += _consume(path)
                if i == 3:
                    break
        # close() waited for the running tasks and cleaned their results.
        assert os.listdir(tmp_path) == []
    assert os.listdir(tmp_path) == []
    if method == "imap":
        assert total == 0 + 1 + 4 + 9


def test_pipeline_iterator_dropped_after_break_then_pool_closed(tmp_path: Path) -> None:
    total = 0
    mapper = functools.partial(_write_square, str(tmp_path))
    with RobustPool(2) as pool:
        it = pool.imap(mapper, range(PIPELINE_N), cleanup=os.unlink)
        results = _bounded(it)
        for i, path in enumerate(results):
            total += _consume(path)
            if i == 3:
                break
        del results, it  # dropped, never closed: garbage collection keeps the promise
    assert os.listdir(tmp_path) == []
    assert total == 0 + 1 + 4 + 9


# --------------------------------------------------------------------------------------
# 2. Laziness
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 3])
def test_input_is_read_lazily(chunksize: int) -> None:
    buffersize = 4
    window = buffersize * chunksize + chunksize  # the window plus at most one chunk of slack
    pulled = [0]
    source = _counting(pulled, range(100_000))
    with RobustPool(2) as pool, pool.imap(_square, source, chunksize, buffersize=buffersize) as it:
        assert pulled[0] <= window
        assert [it.next(timeout=GET) for _ in range(5)] == [0, 1, 4, 9, 16]
        time.sleep(0.3)  # room for any background reader to run ahead
        assert 5 <= pulled[0] <= 5 + window


@pytest.mark.parametrize("chunksize", [1, 3])
def test_infinite_generator_with_islice(chunksize: int) -> None:
    buffersize = 4
    pulled = [0]
    source = _counting(pulled, itertools.count())
    with RobustPool(2) as pool, pool.imap(_square, source, chunksize, buffersize=buffersize) as it:
        assert list(itertools.islice(_bounded(it), 50)) == [x * x for x in range(50)]
        assert pulled[0] <= 50 + buffersize * chunksize + chunksize


def _nbytes(data: bytes) -> int:
    return len(data)


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize(("n", "chunksize"), [(80, 1), (80, 3), (82, 3), (79, 2)])
def test_big_items_shrink_the_read_ahead_and_iteration_still_ends(ordered: bool, n: int, chunksize: int) -> None:
    """1 MiB items: the window drops from ``buffersize`` chunks (here every item) to about
    _BYTES_AHEAD of input, and the iterator ends whichever chunk meets the input's end."""
    mib = 1 << 20
    ahead = _BYTES_AHEAD // mib
    pulled = [0]
    source = _counting(pulled, (bytes([k % 256]) * mib for k in range(n)))  # distinct: no pickle memo
    with RobustPool(2) as pool:
        imap = pool.imap if ordered else pool.imap_unordered
        with imap(_nbytes, source, chunksize, buffersize=64) as it:
            assert it.next(timeout=GET) == mib
            assert pulled[0] <= 1 + ahead + 2 * chunksize < n
            assert list(_bounded(it)) == [mib] * (n - 1)
        assert list(pool.imap(_nbytes, [b"y" * mib] * 9, 4)) == [mib] * 9


class _BadAfter:
    """A class-based endless iterator (its frames, unlike a generator's, keep their caller)."""

    def __init__(self, bad_at: int, unpicklable: bool) -> None:
        self.i, self.bad_at, self.unpicklable = -1, bad_at, unpicklable

    def __iter__(self) -> _BadAfter:
        return self

    def __next__(self) -> Any:
        self.i += 1
        if self.i == self.bad_at:
            if self.unpicklable:
                return threading.Lock()
            raise ValueError("bad input")
        return self.i


def _start_and_drop(pool: RobustPool, source: Iterable[Any]) -> weakref.ref[IMapIterator[Any]]:
    it = pool.imap(_square, source)
    assert it.next(timeout=GET) == 0
    return weakref.ref(it)  # the iterator is dropped here, never closed


@pytest.mark.parametrize("unpicklable", [True, False], ids=["unpicklable-item", "input-raises"])
def test_a_stored_input_error_does_not_keep_a_dropped_endless_iterator_alive(unpicklable: bool) -> None:
    # The stored error's traceback held the frames that made it, one of which held the
    # iterator: join() then read the endless input forever.
    pool = RobustPool(2)
    try:
        ref = _start_and_drop(pool, _BadAfter(3, unpicklable))
        gc.collect()
        assert ref() is None
        pool.close()
        t0 = time.monotonic()
        pool.join(timeout=GET)
        assert time.monotonic() - t0 < GET / 2
    finally:
        pool.terminate()


def test_join_timeout_bounds_reading_a_live_endless_input() -> None:
    pool = RobustPool(2)
    try:
        it = pool.imap(_square, itertools.count())
        assert it.next(timeout=GET) == 0
        pool.close()
        t0 = time.monotonic()
        pool.join(timeout=1.0)  # the input is endless and the iterator reachable
        assert time.monotonic() - t0 < 5.0
        assert it.next(timeout=GET) == 1  # still usable
    finally:
        pool.terminate()


def test_an_input_error_keeps_its_traceback_as_text() -> None:
    with RobustPool(1) as pool, pool.imap(_square, _BadAfter(2, False)) as it:
        assert [it.next(timeout=GET) for _ in range(2)] == [0, 1]
        with pytest.raises(ValueError, match="bad input") as info:
            it.next(timeout=GET)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "__next__" in notes and "raise ValueError" in notes


# --------------------------------------------------------------------------------------
# 3. An input error surfaces at its position
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("buffersize", [1, None])
@pytest.mark.parametrize("chunksize", [1, 3])
def test_input_error_surfaces_at_its_position(chunksize: int, buffersize: int | None) -> None:
    with RobustPool(2) as pool, pool.imap(_square, _raising_after(7), chunksize, buffersize=buffersize) as it:
        assert [it.next(timeout=GET) for _ in range(7)] == [x * x for x in range(7)]
        with pytest.raises(ValueError, match="input broke after 7 items"):
            it.next(timeout=GET)
        with pytest.raises(StopIteration):
            it.next(timeout=GET)


# --------------------------------------------------------------------------------------
# 4. Chunk isolation
# --------------------------------------------------------------------------------------


def _outcomes(it: IMapIterator[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(it.next(timeout=GET))
        except StopIteration:
            raise AssertionError(f"only {len(out)} of {n} results") from None
        except Exception as exc:
            out.append(exc)
    with pytest.raises(StopIteration):
        it.next(timeout=GET)
    return out


def test_chunk_with_a_failing_item_fails_only_that_item() -> None:
    with RobustPool(2) as pool, pool.imap(_fail_at_6, range(16), chunksize=4) as it:
        out = _outcomes(it, 16)
    assert [v for i, v in enumerate(out) if i != 6] == [x * x for x in range(16) if x != 6]
    assert isinstance(out[6], ValueError) and str(out[6]) == "item 6 is bad"


def test_chunk_with_a_killed_worker_fails_only_the_running_item() -> None:
    with RobustPool(2) as pool, pool.imap(_kill_at_6, range(16), chunksize=4) as it:
        out = _outcomes(it, 16)
    assert [v for i, v in enumerate(out) if i != 6] == [x * x for x in range(16) if x != 6]
    err = out[6]
    assert isinstance(err, WorkerLostError), repr(err)
    assert err.signal is signal.SIGKILL and err.task_index == 6


def _refuse_in(owner_pid: int) -> str:
    if os.getpid() == owner_pid:
        raise ValueError("refuse to be unpickled in the owner")
    return "rebuilt elsewhere"


class _OwnerRefuses:
    """A result that pickles in the worker but cannot be rebuilt in the owner."""

    def __init__(self, owner_pid: int) -> None:
        self.owner_pid = owner_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_in, (self.owner_pid,))


def _file_or_refuse(directory: str, owner_pid: int, x: int) -> Any:
    """Item 5 returns what the owner cannot unpickle; every other item leaves a temp file."""
    if x == 5:
        return _OwnerRefuses(owner_pid)
    return _write_square(directory, x)


@pytest.mark.parametrize("call", ["map_async-chunk8", "imap-chunk4", "imap-auto-batch"])
def test_an_unpicklable_result_in_a_chunk_fails_only_it_and_runs_nothing_twice(tmp_path: Path, call: str) -> None:
    # A chunk's results used to travel as one pickle: one the owner could not rebuild failed
    # the whole pickle, the chunk was re-run item by item, and the first run's files leaked.
    fn = functools.partial(_file_or_refuse, str(tmp_path), os.getpid())
    cleaned: list[str] = []
    with RobustPool(2) as pool:
        if call == "map_async-chunk8":
            with pytest.raises(Exception, match="refuse to be unpickled") as info:
                pool.map_async(fn, range(16), chunksize=8, cleanup=cleaned.append).get(timeout=GET)
            assert "unpickling the result in the owner" in str(info.value)
            handed: list[str] = []
        else:
            if call == "imap-auto-batch":
                pool.map(_square, range(2000), chunksize=1)  # tiny tasks: imap now batches items
            it = pool.imap(fn, range(16), chunksize=4 if call == "imap-chunk4" else 1)
            out = _outcomes(it, 16)
            assert isinstance(out[5], Exception) and "refuse to be unpickled" in str(out[5].__cause__)
            handed = [p for i, p in enumerate(out) if i != 5]
            assert [int(Path(p).read_text()) for p in handed] == [x * x for x in range(16) if x != 5]
    made = sorted(os.listdir(tmp_path))
    assert len(made) == 15, f"an item ran twice: {made}"
    assert sorted(os.path.basename(p) for p in handed + cleaned) == made


# --------------------------------------------------------------------------------------
# 5. Exactly-once accounting (hypothesis)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    n: int
    chunksize: int
    buffersize: int
    fails: frozenset[int]
    kill: int | None
    stop: int | None  # how many outcomes the consumer takes; None: until StopIteration
    ordered: bool
    via_gc: bool  # drop the iterator (del + gc) instead of close()


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(0, 60))
    positions = st.integers(0, max(n - 1, 0))
    fails = draw(st.frozensets(positions, max_size=5)) if n else frozenset()
    others = sorted(set(range(n)) - fails)
    kill = draw(st.none() | st.sampled_from(others)) if others else None
    return Case(
        n=n,
        chunksize=draw(st.integers(1, 5)),
        buffersize=draw(st.integers(1, 6)),
        fails=fails,
        kill=kill,
        stop=draw(st.none() | st.integers(0, n)),
        ordered=draw(st.booleans()),
        via_gc=draw(st.booleans()),
    )


def _take(it: IMapIterator[int], stop: int | None, outcomes: list[tuple[str, int]]) -> bool:
    """Consume up to ``stop`` outcomes as ``(kind, position)``; True when exhausted. Only
    ints are kept: a stored exception's traceback would keep the iterator alive."""
    while stop is None or len(outcomes) < stop:
        try:
            token = it.next(timeout=GET)
        except StopIteration:
            return True
        except ValueError as exc:
            outcomes.append(("raised", int(exc.args[0])))
        except WorkerLostError as exc:
            assert exc.signal is signal.SIGKILL
            outcomes.append(("lost", -1 if exc.task_index is None else exc.task_index))
        else:
            outcomes.append(("ok", token))
    return False


def _check_case(pool: RobustPool, case: Case) -> None:
    marker_dir = tempfile.mkdtemp(prefix="rp-markers-")
    try:
        pulled = [0]
        handed_or_raised: list[tuple[str, int]] = []
        cleaned: list[int] = []
        mapper = functools.partial(_token_task, marker_dir, case.fails, case.kill)
        imap = pool.imap if case.ordered else pool.imap_unordered
        it = imap(mapper, _counting(pulled, range(case.n)), case.chunksize, cleanup=cleaned.append, buffersize=case.buffersize)
        exhausted = _take(it, case.stop, handed_or_raised)
        if case.via_gc:
            ref = weakref.ref(it)
            del it
            gc.collect()
            _wait_for(lambda: gc.collect() >= 0 and ref() is None, 20.0, "the dropped iterator to be collected")
        else:
            it.close()
            with pytest.raises(StopIteration):
                it.next(timeout=1.0)
            del it

        def reached() -> tuple[set[int], set[int]]:
            names = os.listdir(marker_dir)
            killers = {int(name.split("-")[1]) for name in names if name.startswith("killer-")}
            runs = [tuple(int(p) for p in name.split("-")[1:]) for name in names if name.startswith("ran-")]
            return {x for x, pid in runs if pid not in killers}, {x for x, _pid in runs}

        # A run in a worker that lived on reached the owner (close() waits for running
        # tasks). A run in the worker that was SIGKILLed later may have reached it (result
        # flushed before the kill) or not (lost and run again, or cancelled by close()).
        surely_reached, maybe_reached = reached()
        if case.via_gc:
            # Collection closes without waiting: a task that was running then has left its
            # marker but its result is still on its way, to be cleaned when it arrives.
            deadline = time.monotonic() + 10.0
            while not surely_reached <= {x for kind, x in handed_or_raised if kind == "ok"} | set(cleaned):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
                surely_reached, maybe_reached = reached()
        successful = set(range(case.n)) - case.fails - {case.kill}
        pulled_ok = successful & set(range(pulled[0]))
        handed = [x for kind, x in handed_or_raised if kind == "ok"]

        def expected(i: int) -> tuple[str, int]:
            return ("ok", i) if i in successful else ("raised", i) if i in case.fails else ("lost", i)

        # What the consumer saw is right.
        want = case.n if case.stop is None else min(case.stop, case.n)
        assert len(handed_or_raised) == want
        assert exhausted == (case.stop is None or case.stop > case.n)
        if case.ordered:
            assert handed_or_raised == [expected(i) for i in range(want)]
        else:
            assert all(outcome == expected(outcome[1]) for outcome in handed_or_raised), handed_or_raised
            assert len({i for _, i in handed_or_raised}) == want
        # Exactly once, and only for results the consumer never got.
        assert len(handed) == len(set(handed)), f"a result handed twice: {handed}"
        assert len(cleaned) == len(set(cleaned)), f"a result cleaned twice: {sorted(cleaned)}"
        assert not set(handed) & set(cleaned), f"cleaned although handed: {set(handed) & set(cleaned)}"
        assert set(cleaned) <= successful, f"cleanup got a failed item: {set(cleaned) - successful}"
        # Every result that reached the owner was handed or cleaned, and nothing else was.
        given_out = set(handed) | set(cleaned)
        assert surely_reached <= given_out, f"reached the owner, neither handed nor cleaned: {sorted(surely_reached - given_out)}"
        assert given_out <= maybe_reached, f"handed or cleaned without a completed run: {sorted(given_out - maybe_reached)}"
        if case.via_gc:
            # A dropped iterator is collected at once and closes like close(): tasks not
            # yet started are cancelled (the contract), so only what ran is accounted for,
            # by the checks above. It never yields more than it pulled.
            assert given_out <= pulled_ok | set(cleaned)
        # Lazy input: never more than the window ahead of what the consumer took.
        assert pulled[0] <= len(handed_or_raised) + case.buffersize * case.chunksize + case.chunksize
    finally:
        shutil.rmtree(marker_dir, ignore_errors=True)


@pytest.mark.timeout(60)
def test_exactly_once_accounting() -> None:
    # One pool for every example (a module-scoped fixture would trip conftest's leak check:
    # the replacement of a SIGKILLed worker is born during a test and outlives it).
    with RobustPool(2) as pool:

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(case=cases())
        def check(case: Case) -> None:
            _check_case(pool, case)

        check()


def test_close_cancels_tasks_not_yet_started(tmp_path: Path) -> None:
    cleaned: list[int] = []
    with RobustPool(2) as pool:
        it = pool.imap(functools.partial(_marked_slow, str(tmp_path)), range(10), buffersize=10, cleanup=cleaned.append)
        assert it.next(timeout=GET) == 0
        time.sleep(0.15)  # the tasks after the first two get going
        started_before_close = _started(tmp_path)
        it.close()
        assert sorted(cleaned) == sorted(started_before_close - {0})
    assert _started(tmp_path) == started_before_close, "a task not yet started at close() ran anyway"
    assert len(started_before_close) < 10


# --------------------------------------------------------------------------------------
# 6. map with cleanup
# --------------------------------------------------------------------------------------

SQUARES_BUT_13 = sorted(x * x for x in range(20) if x != 13)


@pytest.mark.parametrize("chunksize", [None, 1, 4])
@pytest.mark.parametrize("variant", ["map_async", "map", "starmap"])
def test_map_failure_cleans_every_successful_result(variant: str, chunksize: int | None) -> None:
    cleaned: list[int] = []
    with RobustPool(2) as pool:
        with pytest.raises(ValueError, match="item 13 is bad"):
            if variant == "map_async":
                pool.map_async(_square_unless_13, range(20), chunksize, cleanup=cleaned.append).get(timeout=GET)
            elif variant == "map":
                pool.map(_square_unless_13, range(20), chunksize, cleanup=cleaned.append)
            else:
                pool.starmap(_mul_unless_13, [(x, x) for x in range(20)], chunksize, cleanup=cleaned.append)
        assert sorted(cleaned) == SQUARES_BUT_13
        # A successful map cleans nothing.
        assert pool.map(_square, range(5), cleanup=cleaned.append) == [0, 1, 4, 9, 16]
    assert sorted(cleaned) == SQUARES_BUT_13


# --------------------------------------------------------------------------------------
# 7. Cleanup errors
# --------------------------------------------------------------------------------------


def _buffered_iterator(pool: RobustPool, calls: list[int]) -> IMapIterator[int]:
    """An iterator over 0..9 whose consumer took 0 and dawdled: 1..9 are buffered."""
    it = pool.imap(_identity, range(10), buffersize=64, cleanup=functools.partial(_raise_for_odd, calls))
    assert it.next(timeout=GET) == 0
    time.sleep(1.0)
    return it


ODD_ERRORS = [f"cannot clean {v}" for v in (1, 3, 5, 7, 9)]


def test_close_runs_every_cleanup_then_raises_group(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with RobustPool(2) as pool:
        it = _buffered_iterator(pool, calls)
        with pytest.raises(ExceptionGroup) as info:
            it.close()
        it.close()  # a second close cleans nothing again and raises nothing
    assert sorted(calls) == list(range(1, 10))
    assert sorted(str(e) for e in info.value.exceptions) == ODD_ERRORS
    assert all(isinstance(e, RuntimeError) for e in info.value.exceptions)
    records = _robustpool_errors(caplog)
    assert len(records) == 5
    assert sorted(str(r.exc_info[1]) for r in records if r.exc_info) == ODD_ERRORS


def test_close_cleans_results_of_running_tasks_before_returning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with RobustPool(2) as pool:
        # Window of 3: items 1 and 2 (0.4 s each) are running when the consumer closes.
        it = pool.imap(_slow_unless_0, range(6), buffersize=3, cleanup=functools.partial(_slow_raising_cleanup, calls))
        assert it.next(timeout=GET) == 0
        errors: list[str] = []
        try:
            it.close()
        except ExceptionGroup as group:
            errors = sorted(str(e) for e in group.exceptions)
        calls_when_close_returned = sorted(calls)
    assert sorted(calls) == [1, 2]
    # close() waits for running tasks (close_timeout) and cleans their results, and a
    # cleanup error is raised by it like any other, not only logged.
    assert (calls_when_close_returned, errors) == ([1, 2], ["cannot clean 1", "cannot clean 2"])
    assert len(_robustpool_errors(caplog)) == 2


def test_terminate_runs_every_cleanup_then_raises_group(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    pool = RobustPool(2)
    try:
        it = _buffered_iterator(pool, calls)
        with pytest.raises(ExceptionGroup) as info:
            pool.terminate()
    finally:
        pool.terminate()
    assert sorted(calls) == list(range(1, 10))
    assert sorted(str(e) for e in info.value.exceptions) == ODD_ERRORS
    assert len(_robustpool_errors(caplog)) == 5
    with pytest.raises(StopIteration):
        it.next(timeout=1.0)


def test_leaving_pool_by_exception_keeps_the_users_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with pytest.raises(ConsumerError) as info, RobustPool(2) as pool:
        it = _buffered_iterator(pool, calls)
        raise ConsumerError("mine")
    assert type(info.value) is ConsumerError and str(info.value) == "mine"
    notes = getattr(info.value, "__notes__", [])
    assert any("cleanup" in note and "5" in note for note in notes), notes
    assert sorted(calls) == list(range(1, 10))
    assert len(_robustpool_errors(caplog)) == 5
    del it


def test_map_cleanup_errors_are_logged_and_noted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robustpool")
    calls: list[int] = []
    with RobustPool(2) as pool, pytest.raises(ValueError, match="item 13 is bad") as info:
        pool.map(_square_unless_13, range(20), 3, cleanup=functools.partial(_raise_for_odd, calls))
    assert sorted(calls) == SQUARES_BUT_13
    odd = [v for v in SQUARES_BUT_13 if v % 2]
    notes = getattr(info.value, "__notes__", [])
    assert any("cleanup" in note and str(len(odd)) in note for note in notes), notes
    assert len(_robustpool_errors(caplog)) == len(odd)


# --------------------------------------------------------------------------------------
# 8. terminate() with buffered results
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "chunksize"), PIPELINES)
def test_terminate_cleans_every_buffered_result_exactly_once(method: str, chunksize: int) -> None:
    cleaned: list[int] = []
    pool = RobustPool(2)
    try:
        it = getattr(pool, method)(_identity, range(40), chunksize, buffersize=64, cleanup=cleaned.append)
        handed = [it.next(timeout=GET) for _ in range(2)]
        time.sleep(1.0)  # the consumer dawdles; the other 38 results are buffered
        pool.terminate()
    finally:
        pool.terminate()
    assert len(set(handed)) == 2
    assert sorted(cleaned) == sorted(set(range(40)) - set(handed))  # each exactly once
    with pytest.raises(StopIteration):
        it.next(timeout=1.0)


# --------------------------------------------------------------------------------------
# 9. Ctrl-C in the owner
# --------------------------------------------------------------------------------------


def _session_members(sid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p)
    return members


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_ctrl_c_in_the_owner_leaves_no_process_and_no_delivered_file(tmp_path: Path) -> None:
    """Strict file assertion: every file whose path reached the owner is gone -- the
    consumer deleted the handed ones, ``cleanup`` the rest (each path once, never both).
    The files of tasks that were still running may remain only if unfinished ("running"):
    a "done" file means its task returned, and since close() waits for running tasks, that
    result reached the owner, so it must have been handed or cleaned."""
    work = tmp_path / "files"
    work.mkdir()
    log_path = tmp_path / "log.txt"
    owner = subprocess.Popen(
        [sys.executable, str(SIGINT_OWNER), str(work), str(log_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sid = owner.pid
    try:
        assert owner.stdout is not None and owner.stderr is not None
        ready, _, _ = select.select([owner.stdout], [], [], 30.0)
        assert ready, "the owner never printed 'started'"
        line = owner.stdout.readline().split()
        assert line and line[0] == "started", line
        pids = [int(p) for p in line[1:]]
        assert len(pids) >= 2  # the supervisor and at least one worker
        time.sleep(0.05)  # let the owner block in next() again
        os.killpg(sid, signal.SIGINT)
        signalled = time.monotonic()
        owner.wait(timeout=10.0)
        elapsed = time.monotonic() - signalled
        _wait_for(lambda: not _session_members(sid), 5.0, "the owner's session to be empty")
        assert not [p for p in pids if _alive(p)]
        stderr = owner.stderr.read()
    finally:
        for p in _session_members(sid):
            with contextlib.suppress(psutil.Error):
                p.kill()
        if owner.poll() is None:
            owner.kill()
            owner.wait(5.0)
        for pipe in (owner.stdout, owner.stderr):
            if pipe is not None:
                pipe.close()
    assert elapsed < 4.0, f"the owner took {elapsed:.1f} s to exit after SIGINT"
    assert owner.returncode == -signal.SIGINT, (owner.returncode, stderr)
    assert stderr.count("Traceback (most recent call last)") == 1, stderr
    assert "KeyboardInterrupt" in stderr, stderr

    entries = [line.split(" ", 1) for line in log_path.read_text().splitlines()]
    handed = [path for kind, path in entries if kind == "handed"]
    cleaned = [path for kind, path in entries if kind == "cleaned"]
    assert handed, "nothing was handed before the interrupt"
    assert len(handed) == len(set(handed)) and len(cleaned) == len(set(cleaned))
    assert not set(handed) & set(cleaned)
    assert not [p for p in handed + cleaned if os.path.exists(p)]
    finished = [name for name in os.listdir(work) if (work / name).read_text() == "done"]
    assert finished == [], f"results that reached the owner were neither handed nor cleaned: {finished}"
