"""The reply's trip, and what a task's end is counted as: a worker that dies after its task
finished, before the reply arrived, has used an attempt (the task runs at most ``retries + 1``
times); a result over the frame limit is a TaskSerializationError in the worker, not a
death; a worker killed while it sends a big result does not get its task run again; bytes
that are not frames, or a frame header claiming 4 GiB, on the data socket fail that task
without a hang or a big allocation, and the pool carries on; and a RecursionError comes back
as itself, from one run, with no worker replaced (items 2, 3 and 9 of the hardening brief).
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from robustpool import RobustPool, RobustPoolError, TaskSerializationError, WorkerLostError

from ._support import (
    RESULT_WORKER,
    MiB,
    _at_most_replaced,
    _at_most_runs,
    _big_after_pidfile,
    _big_bytes,
    _close_fds_then_return,
    _devnull_over_fds_then_return,
    _outcome,
    _recurse_forever,
    _runs,
    _scribble,
    _shrink_frames,
    _wait_for_file,
)

# === 2. a death after the task finished, before its reply arrived, is an attempt ==========


@pytest.mark.parametrize("retries", [0, 1])
@pytest.mark.parametrize("task", [_close_fds_then_return, _devnull_over_fds_then_return], ids=["closerange", "dup2-devnull"])
def test_death_while_replying_counts_as_an_attempt(task: Callable[[str], str], retries: int, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    start = time.monotonic()
    with RobustPool(1, retries=retries) as pool:
        checks = (_at_most_runs(runs, retries + 1), _at_most_replaced(pool, retries + 1))
        got = _outcome(pool.apply_async(task, (str(runs),)), 20, checks)
        assert isinstance(got, WorkerLostError), repr(got)
        assert _runs(runs) == retries + 1
        assert len(got.attempts) == retries + 1
        assert pool.stats().workers_replaced <= retries + 1
        assert pool.apply_async(abs, (-2,)).get(timeout=20) == 2
    assert time.monotonic() - start < 20


def test_a_result_over_the_frame_limit_is_a_serialization_error(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with RobustPool(1, initializer=_shrink_frames, retries=1) as pool:
        checks = (_at_most_runs(runs, 1), _at_most_replaced(pool, 0))
        got = _outcome(pool.apply_async(_big_bytes, (str(runs), 2 * MiB)), 20, checks)
        assert isinstance(got, TaskSerializationError), repr(got)
        assert got.phase == RESULT_WORKER
        text = str(got)
        assert any(word in text for word in ("limit", "MAX_FRAME", str(1 << 20), "1.0 MiB")), text
        assert _runs(runs) == 1
        assert pool.apply_async(abs, (-3,)).get(timeout=20) == 3
        assert pool.stats().workers_replaced == 0


def _spin_until(done: Callable[[], bool], timeout: float) -> bool:
    """Busy-wait (pure Python, holding the GIL between checks) until ``done()`` or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        for _ in range(20_000):
            pass
    return False


@pytest.mark.timeout(90)
def test_worker_killed_while_sending_a_big_result_is_not_run_again(tmp_path: Path) -> None:
    runs, pidfile, size = tmp_path / "runs", tmp_path / "pid", 200 * MiB
    me = psutil.Process()
    start = time.monotonic()
    with RobustPool(1, retries=0) as pool:
        before = me.memory_info().rss
        pending = pool.apply_async(_big_after_pidfile, (str(runs), str(pidfile), size))
        pid = int(_wait_for_file(pidfile, 20))
        # The result is being pickled, then sent. Kill the worker while it sends: once the
        # owner's RSS shows the frame arriving, plus 20 ms. Meanwhile this thread spins,
        # holding the GIL, so the owner's dispatcher reads the frame slowly (a few MiB per
        # switch interval) and the kill lands well before the last byte.
        _spin_until(lambda: pending.ready() or me.memory_info().rss - before > size // 16, 10)
        _spin_until(lambda: False, 0.02)
        if not pending.ready():
            os.kill(pid, signal.SIGKILL)
        got = _outcome(pending, 20, (_at_most_runs(runs, 1), _at_most_replaced(pool, 1)))
        if not isinstance(got, WorkerLostError):
            assert isinstance(got, bytes) and len(got) == size, repr(got)[:200]
        del got
        assert _runs(runs) == 1
        stats = pool.stats()
        assert stats.tasks_retried == 0 and stats.workers_replaced <= 1, stats
        assert pool.apply_async(abs, (-4,)).get(timeout=20) == 4
    assert time.monotonic() - start < 30


# === 3. garbage on the data plane ends the call; it never hangs nor eats memory =========


@pytest.mark.parametrize("then", ["sleep", "return"])
def test_garbage_from_a_worker_fails_its_task_and_the_pool_carries_on(then: str) -> None:
    with RobustPool(1, retries=0) as pool:
        pending = pool.apply_async(_scribble, ("garbage", then))
        # A task queued behind it on the same worker (while it sleeps) must still run; one
        # that returns may already have moved on, so the follow-up is sent afterwards.
        queued = pool.apply_async(abs, (-5,)) if then == "sleep" else None
        got = _outcome(pending, 20, what="the scribbling task")
        assert isinstance(got, RobustPoolError), repr(got)
        if queued is None:
            queued = pool.apply_async(abs, (-5,))
        assert queued.get(timeout=20) == 5


@pytest.mark.timeout(90)
@pytest.mark.parametrize("then", ["sleep", "return"])
def test_a_frame_header_claiming_4_gib_does_not_allocate_it(then: str) -> None:
    me = psutil.Process()
    with RobustPool(1, retries=0) as pool:
        assert pool.apply_async(abs, (-1,)).get(timeout=20) == 1
        before = me.memory_info().rss

        def rss_bounded() -> None:
            grew = me.memory_info().rss - before
            assert grew <= 200 * MiB, f"the owner's RSS grew by {grew / MiB:.0f} MiB on a bogus frame header"

        got = _outcome(pool.apply_async(_scribble, ("header", then)), 20, (rss_bounded,), "the scribbling task")
        rss_bounded()
        assert isinstance(got, RobustPoolError), repr(got)
        assert pool.apply_async(abs, (-6,)).get(timeout=20) == 6


# === 9. RecursionError comes back as itself ==============================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("limit", [None, 100_000], ids=["default-limit", "limit-100000"])
def test_recursion_error_comes_back_as_itself(limit: int | None, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with RobustPool(1, retries=1) as pool:
        checks = (_at_most_runs(runs, 1), _at_most_replaced(pool, 0))
        got = _outcome(pool.apply_async(_recurse_forever, (str(runs), limit)), 30, checks)
        assert type(got) is RecursionError, f"{type(got).__name__}: {str(got)[:300]}"
        assert got.__traceback__ is not None
        assert "_recurse" in "".join(traceback.format_exception(got))[-20_000:]
        assert _runs(runs) == 1
        assert pool.apply_async(abs, (-8,)).get(timeout=20) == 8
