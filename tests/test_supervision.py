"""Supervision policies: timeouts, retries, memory limits, recycling, process trees, orphans."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from robustpool import RobustPool, TaskTimeoutError, WorkerLostError


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _die_once(marker: str) -> str:
    """SIGKILLs its worker the first time (the marker file records that it happened)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return "second time lucky"


def _always_die(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def _hog(mib: int) -> int:
    block = bytearray(mib * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(1.5)  # stay big long enough for the supervisor to see it
    return len(block)


def _pid(_: object = None) -> int:
    return os.getpid()


def _spawn_sleeper(pidfile: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(pidfile).write_text(str(child.pid))
    time.sleep(60)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_timeout_kills_the_task_fast_and_the_pool_carries_on() -> None:
    with RobustPool(1, task_timeout=0.5) as pool:
        start = time.monotonic()
        with pytest.raises(TaskTimeoutError) as info:
            pool.apply(_sleep, (20,))
        assert time.monotonic() - start < 2.0
        err = info.value
        assert err.timeout == 0.5 and err.elapsed >= 0.5 and "_sleep(20)" in str(err)
        assert pool.apply(_sleep, (0.01,)) == 0.01
        assert pool.stats().tasks_timed_out == 1


class _SlowToLoad:
    """An argument whose unpickling in the worker takes ``seconds`` (as a slow import would)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __reduce__(self) -> tuple[object, tuple[float]]:
        return (_load_slowly, (self.seconds,))


def _load_slowly(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _loaded(arg: float) -> float:
    return arg


def test_task_timeout_counts_the_run_not_the_loading_of_the_task() -> None:
    # A fresh worker imports the task's module while loading it; on a loaded machine that
    # can pass a short limit, and after a timeout kill every replacement would pay it again.
    with RobustPool(1, task_timeout=0.5) as pool:
        assert pool.apply(_loaded, (_SlowToLoad(0.8),)) == 0.8
        assert pool.stats().tasks_timed_out == 0


def test_timeout_fails_only_the_slow_item_of_a_map() -> None:
    with RobustPool(2, task_timeout=1.0) as pool:
        results = pool.map_async(_sleep, [0.01, 5.0, 0.02, 0.01], chunksize=1)
        with pytest.raises(TaskTimeoutError) as info:
            results.get(timeout=30)
        assert info.value.task_index == 1


def test_retry_heals_a_task_that_killed_its_worker_once(tmp_path: Path) -> None:
    with RobustPool(1, retries=1) as pool:
        assert pool.apply(_die_once, (str(tmp_path / "m"),)) == "second time lucky"
        assert pool.stats().tasks_retried == 1


def _echo_dying_once_at(x: int, marker: str) -> int:
    if x == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(0.2)  # the caller has mutated its list by now
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_a_retry_runs_the_items_as_they_were_at_the_call(tmp_path: Path) -> None:
    """A task keeps its items to run them again after a death: a one-chunk map_async must
    keep a copy, not the caller's list, which the caller may reuse at once."""
    items = [(0, str(tmp_path / "m")), (1, str(tmp_path / "m")), (2, str(tmp_path / "m"))]
    with RobustPool(1, retries=1) as pool:
        result = pool.starmap_async(_echo_dying_once_at, items, chunksize=3)
        items[:] = [(10, ""), (11, ""), (12, "")]
        assert result.get(timeout=30) == [0, 1, 2]
        assert pool.stats().tasks_retried == 1


@pytest.mark.parametrize("retries", [0, 2])
def test_poison_task_fails_after_retries_plus_one_attempts(retries: int) -> None:
    with RobustPool(2, retries=retries) as pool:
        with pytest.raises(WorkerLostError) as info:
            pool.apply_async(_always_die, (1,)).get(timeout=30)
        assert len(info.value.attempts) == retries + 1
        assert len({pid for pid, _ in info.value.attempts}) == retries + 1
        assert all(code == -signal.SIGKILL for _, code in info.value.attempts)
        assert pool.apply(_pid) > 0


def test_task_exceptions_are_not_retried() -> None:
    with RobustPool(1, retries=3) as pool:
        with pytest.raises(ZeroDivisionError):
            pool.apply(divmod, (1, 0))
        assert pool.stats().tasks_retried == 0


def test_memory_soft_limit_recycles_after_the_task(caplog: pytest.LogCaptureFixture) -> None:
    with RobustPool(1, memory_limit="150MiB") as pool:
        first = pool.apply(_pid)
        with caplog.at_level(logging.WARNING, logger="robustpool"):
            assert pool.apply(_hog, (200,)) == 200 * 2**20  # over the limit, under twice it
        deadline = time.monotonic() + 10
        while pool.apply(_pid) == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.apply(_pid) != first
        assert any("over memory_limit" in r.getMessage() for r in caplog.records)
        assert dict(pool.stats().replaced).get("recycled (memory_limit)") == 1


def test_memory_far_over_the_limit_kills_and_says_so() -> None:
    with RobustPool(1, memory_limit="60MiB") as pool:
        with pytest.raises(WorkerLostError) as info:
            pool.apply_async(_hog, (300,)).get(timeout=30)
        text = str(info.value)
        assert "memory" in text and "MiB" in text and info.value.signal is signal.SIGKILL
        assert pool.apply(_pid) > 0


@pytest.mark.parametrize("bad", ["lots", "-5MB", 0, "12 parsecs", True])
def test_bad_memory_limit_is_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        RobustPool(1, memory_limit=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "value"), [("task_timeout", -1), ("task_timeout", 0), ("retries", -1), ("retries", 1.5)])
def test_bad_settings_are_refused(name: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        RobustPool(1, **{name: value})  # type: ignore[arg-type]


def test_recycling_keeps_every_item() -> None:
    with RobustPool(2, maxtasksperchild=3) as pool:
        pids = pool.map(_pid, range(60), chunksize=1)
        assert len(pids) == 60 and len(set(pids)) >= 60 // 3
        assert dict(pool.stats().replaced)["recycled (maxtasksperchild)"] >= 18


def test_a_tasks_subprocess_dies_with_its_killed_worker(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    with RobustPool(1, task_timeout=3.0) as pool:
        pending = pool.apply_async(_spawn_sleeper, (str(pidfile),))
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child = int(pidfile.read_text())
        assert not _gone(child)
        with pytest.raises(TaskTimeoutError):
            pending.get(timeout=30)
        deadline = time.monotonic() + 2
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(child)


OWNER = textwrap.dedent(
    """
    import sys, time
    from robustpool import RobustPool
    def slow(x):
        time.sleep(60)
    pool = RobustPool(2, start_method=sys.argv[1])
    results = [pool.apply_async(slow, (i,)) for i in range(4)]
    time.sleep(0.5)
    print(pool.supervisor_pid, *pool.worker_pids(), flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_owner_kill_9_leaves_no_orphan_after_one_second(start_method: str) -> None:
    with subprocess.Popen([sys.executable, "-c", OWNER, start_method], stdout=subprocess.PIPE, text=True) as owner:
        try:
            assert owner.stdout is not None
            pids = [int(p) for p in owner.stdout.readline().split()]
            assert len(pids) == 3 and all(not _gone(p) for p in pids)
            owner.kill()
            owner.wait(timeout=10)
            time.sleep(1.0)
            assert [p for p in pids if not _gone(p)] == []
        finally:
            owner.kill()


def test_killing_the_supervisor_heals_the_pool() -> None:
    with RobustPool(2) as pool:
        assert pool.map(_pid, range(4)) and len(pool.worker_pids()) == 2
        old_supervisor, old_workers = pool.supervisor_pid, pool.worker_pids()
        os.kill(old_supervisor, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pool.supervisor_pid == old_supervisor and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.supervisor_pid != old_supervisor
        assert sorted(pool.map(abs, range(-10, 0))) == list(range(1, 11))
        assert all(_gone(p) for p in old_workers)


def test_stats_snapshot_counts() -> None:
    with RobustPool(2) as pool:
        pool.map(abs, range(10), chunksize=1)
        with pytest.raises(WorkerLostError):
            pool.apply(_always_die, (1,))
        deadline = time.monotonic() + 10
        while pool.stats().workers_alive < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the replacement is starting
        stats = pool.stats()
    assert stats.tasks_done == 10 and stats.tasks_failed == 1
    assert stats.workers_replaced == 1 and dict(stats.replaced) == {"SIGKILL (-9)": 1}
    assert all(w.pid is not None and (w.rss is None or w.rss > 0) for w in stats.workers)
    assert stats.workers_alive == 2


def test_a_call_can_override_the_pools_task_timeout() -> None:
    with RobustPool(2, task_timeout=30) as pool:
        start = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            pool.apply(_sleep, (20,), task_timeout=0.3)
        with pytest.raises(TaskTimeoutError):
            list(pool.imap(_sleep, [0.01, 20], task_timeout=0.3))
        assert time.monotonic() - start < 5
        assert pool.map(_sleep, [0.2, 0.2], task_timeout=5) == [0.2, 0.2]
        with pytest.raises(ValueError):
            pool.map(_sleep, [0.1], task_timeout=-1)


def test_a_task_queued_on_an_idle_worker_killed_from_outside_runs_elsewhere() -> None:
    # The worker's last task was a chunk, so its slot holds a stale item index >= 1.
    with RobustPool(1, start_method="fork") as pool:
        # The worker says its own pid: the supervisor's word of it can arrive after its
        # first result, so worker_pids() may still be empty here.
        pid, _ = pool.map(_pid, [1, 2], chunksize=2)
        os.kill(pid, signal.SIGSTOP)  # idle and frozen: the next task waits in its pipe
        pending = pool.apply_async(abs, (-5,))
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        assert pending.get(timeout=30) == 5
