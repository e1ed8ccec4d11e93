"""``cancel()``: of a pending future, as in the standard library but waking its waiters at
once; of a running one (a deliberate difference from the standard library), it kills that
future's worker, which is replaced, and disturbs nothing else."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, as_completed, wait
from pathlib import Path
from typing import Any

import pytest

from robustpool import RobustExecutor

from .workers import (
    FAST,
    GET,
    PROMPT,
    announce_then_wait,
    pid_of,
    process_gone,
    released,
    square,
    wait_for,
    wait_until,
    warm_up,
    write_square,
)


class _Waiters:
    """Threads blocked in ``as_completed`` and ``wait`` on some futures; records when each woke."""

    def __init__(self, futures: Sequence[Future[Any]]) -> None:
        self.woke: dict[str, float] = {}
        self.yielded: list[Future[Any]] = []
        self.done: set[Future[Any]] = set()
        self._threads = [
            threading.Thread(target=self._as_completed, args=(futures,)),
            threading.Thread(target=self._wait, args=(futures,)),
        ]
        for t in self._threads:
            t.start()

    def _as_completed(self, futures: list[Future[Any]]) -> None:
        for f in as_completed(futures, timeout=GET):
            self.yielded.append(f)
            self.woke.setdefault("as_completed", time.monotonic())

    def _wait(self, futures: list[Future[Any]]) -> None:
        self.done, _ = wait(futures, timeout=GET, return_when=concurrent.futures.FIRST_COMPLETED)
        self.woke["wait"] = time.monotonic()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a waiter is still blocked"


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_cancel_of_a_running_future_kills_only_its_worker(tmp_path: Path, start_method: str) -> None:
    started, release = tmp_path / "victim-started", tmp_path / "never"
    other_started, other_release = tmp_path / "other-started", tmp_path / "other-release"
    called: list[Future[Any]] = []
    with RobustExecutor(2, start_method=start_method) as executor, released(release), released(other_release):
        warm_up(executor, 2)
        victim = executor.submit(announce_then_wait, str(started), str(release), "never returned")
        other = executor.submit(announce_then_wait, str(other_started), str(other_release), "other")
        victim.add_done_callback(called.append)
        wait_until(lambda: started.exists() and other_started.exists(), "both tasks to start")
        victim_pid, other_pid = int(started.read_text()), int(other_started.read_text())
        assert victim_pid != other_pid, "both tasks ran on one worker"
        assert victim.running() and other.running()

        waiters = _Waiters([victim])
        time.sleep(0.2)  # let them block (if they are late, they find it cancelled: just as good)
        t0 = time.monotonic()
        assert victim.cancel() is True
        assert victim.cancelled() and victim.done() and not victim.running()
        waiters.join(PROMPT)
        assert waiters.yielded == [victim] and waiters.done == {victim}
        assert all(t - t0 < PROMPT for t in waiters.woke.values()), waiters.woke
        assert called == [victim]
        with pytest.raises(CancelledError):
            victim.result(timeout=0)
        with pytest.raises(CancelledError):
            victim.exception(timeout=0)

        wait_until(lambda: process_gone(victim_pid), f"the cancelled task's worker {victim_pid} to be gone")
        wait_until(
            lambda: victim_pid not in executor.worker_pids() and len(executor.worker_pids()) == 2,
            "the killed worker to be replaced",
        )
        wait_until(lambda: dict(executor.stats().replaced).get("cancelled") == 1, "stats() to count the cancel")
        assert executor.stats().replaced == (("cancelled", 1),)

        # The other task, on the other worker, was not disturbed.
        assert other.running() and other_pid in executor.worker_pids()
        other_release.touch()
        assert other.result(timeout=GET) == "other"
        assert executor.submit(square, 12).result(timeout=GET) == 144
        assert victim.cancel() is True  # cancelling again: still cancelled
        assert called == [victim]
        assert executor.stats().replaced == (("cancelled", 1),)


def test_cancel_of_every_running_future_replaces_every_worker(tmp_path: Path) -> None:
    with RobustExecutor(2, start_method=FAST) as executor, released(tmp_path / "never"):
        before = set(warm_up(executor, 2))
        victims = [executor.submit(announce_then_wait, str(tmp_path / f"started{i}"), str(tmp_path / "never")) for i in range(2)]
        wait_until(lambda: all((tmp_path / f"started{i}").exists() for i in range(2)), "both tasks to start")
        assert all(f.cancel() for f in victims)
        wait_until(lambda: dict(executor.stats().replaced).get("cancelled") == 2, "both workers to be replaced")
        assert [f.result(timeout=GET) for f in [executor.submit(square, i) for i in range(6)]] == [0, 1, 4, 9, 16, 25]
        after = set(executor.worker_pids())
        assert len(after) == 2 and not before & after


def test_cancel_of_a_pending_future_wakes_its_waiters_at_once(tmp_path: Path) -> None:
    release, out = tmp_path / "release", tmp_path / "out"
    out.mkdir()
    with RobustExecutor(1, start_method=FAST) as executor, released(release):
        blocker = executor.submit(wait_for, str(release), "blocker")
        wait_until(blocker.running, "the blocker to start")
        pending = [executor.submit(write_square, str(out), i) for i in range(3)]
        assert not any(f.running() or f.done() for f in pending)
        waiters = _Waiters(pending)
        time.sleep(0.2)
        t0 = time.monotonic()
        assert pending[1].cancel()
        # Both wake now, long before the queue reaches the cancelled future.
        wait_until(lambda: len(waiters.woke) == 2, "the waiters to wake", timeout=PROMPT)
        assert all(t - t0 < PROMPT for t in waiters.woke.values()), waiters.woke
        assert waiters.yielded == [pending[1]] and waiters.done == {pending[1]}
        assert not blocker.done()
        assert pending[0].cancel()
        wait_until(lambda: len(waiters.yielded) == 2, "as_completed to yield the second cancel", timeout=PROMPT)
        assert not blocker.done()
        release.touch()
        assert blocker.result(timeout=GET) == "blocker"
        path = pending[2].result(timeout=GET)
        waiters.join(GET)
    assert waiters.yielded == [pending[1], pending[0], pending[2]]
    assert [p.name for p in out.iterdir()] == [Path(path).name]  # the cancelled ones never ran


def test_cancel_return_values_and_callbacks(tmp_path: Path) -> None:
    calls: list[Future[Any]] = []
    with RobustExecutor(1, start_method=FAST) as executor, released(tmp_path / "never") as never:
        done = executor.submit(square, 3)
        assert done.result(timeout=GET) == 9
        assert done.cancel() is False and not done.cancelled()
        assert done.result(timeout=0) == 9

        blocker = executor.submit(wait_for, str(never))  # ended by its cancel
        wait_until(blocker.running, "the blocker to start")
        pending = executor.submit(pid_of)
        pending.add_done_callback(calls.append)
        assert pending.cancel() is True
        assert pending.cancel() is True
        assert calls == [pending]
        assert blocker.cancel() is True
        # The queue moves on: a new submit runs on the replacement worker.
        assert executor.submit(square, 5).result(timeout=GET) == 25
    assert calls == [pending] and pending.cancelled() and blocker.cancelled()


def _slow_start(seconds: float) -> None:
    time.sleep(seconds)


def test_cancel_of_a_future_its_worker_has_not_started_yet_stops_it() -> None:
    """A future counts as running once its task is on its way to a worker; a worker still in
    its initializer has not started it. cancel() must stop it all the same (the kill is not
    dropped because the worker's slot does not name the task yet)."""
    with RobustExecutor(1, initializer=_slow_start, initargs=(0.5,)) as executor:
        future = executor.submit(time.sleep, 30)
        wait_until(future.running, "the task was sent to the worker")
        began = time.monotonic()
        assert future.cancel() and future.cancelled()
        assert executor.submit(square, 12).result(timeout=GET) == 144
        assert time.monotonic() - began < 10  # not the 30 s of the cancelled call
        assert dict(executor.stats().replaced).get("cancelled") == 1
