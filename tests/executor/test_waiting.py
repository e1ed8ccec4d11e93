"""``as_completed`` and ``wait`` over the executor's futures, mixed with finished standard
library futures, after CPython's ``test_as_completed.py`` and ``test_wait.py``; and the
headline case: 100 futures, one task SIGKILLs its worker, 99 results and one
WorkerLostError, and the executor goes on."""

from __future__ import annotations

import concurrent.futures
import itertools
import signal
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, Future, as_completed, wait
from pathlib import Path
from typing import Any

import pytest

from robustpool import RobustExecutor, WorkerLostError

from .workers import (
    FAST,
    GET,
    mul,
    released,
    sigkill_self,
    sleep_and_raise,
    sleep_return,
    square,
    square_or_sigkill,
    wait_for,
    wait_until,
)


def _finished(state: str) -> Future[Any]:
    """A standard library future already in ``state`` (never touched by an executor)."""
    f: Future[Any] = Future()
    if state == "cancelled":
        f.cancel()
    elif state == "cancelled-and-notified":
        f.cancel()
        f.set_running_or_notify_cancel()
    elif state == "exception":
        f.set_exception(OSError("already failed"))
    elif state == "successful":
        f.set_result(42)
    return f


def test_as_completed_yields_every_future_once() -> None:
    done = [_finished(s) for s in ("cancelled-and-notified", "exception", "successful")]
    with RobustExecutor(2, start_method=FAST) as executor:
        f1 = executor.submit(mul, 2, 21)
        f2 = executor.submit(mul, 7, 6)
        completed = list(as_completed([*done, f1, f2], timeout=GET))
        assert set(completed) == {*done, f1, f2} and len(completed) == 5
        assert f1.result(timeout=0) == f2.result(timeout=0) == 42
        # Duplicates (and any iterable) are accepted and yielded once (CPython issues 20367, 31641).
        f3 = executor.submit(sleep_return, 0.2, "dup")
        assert list(as_completed(itertools.repeat(f3, 3), timeout=GET)) == [f3]


@pytest.mark.parametrize("timeout", [0, 0.1])
def test_as_completed_times_out_before_the_unfinished_future(tmp_path: Path, timeout: float) -> None:
    done = {_finished(s) for s in ("cancelled-and-notified", "exception", "successful")}
    seen: set[Future[Any]] = set()
    with RobustExecutor(1, start_method=FAST) as executor, released(tmp_path / "release") as release:
        blocker = executor.submit(wait_for, str(release))
        with pytest.raises(TimeoutError, match=r"1 \(of 4\) futures unfinished"):
            for f in as_completed(done | {blocker}, timeout=timeout):
                seen.add(f)
        assert seen == done
        release.touch()
        assert blocker.result(timeout=GET) is None


def test_wait_first_completed(tmp_path: Path) -> None:
    cancelled = _finished("cancelled")
    with RobustExecutor(2, start_method=FAST) as executor, released(tmp_path / "release") as release:
        f1 = executor.submit(mul, 21, 2)
        f2 = executor.submit(wait_for, str(release))
        finished, pending = wait([cancelled, f1, f2], timeout=GET, return_when=FIRST_COMPLETED)
        assert finished == {f1}
        assert pending == {cancelled, f2}

        already = {_finished("cancelled-and-notified"), _finished("successful")}
        finished, pending = wait([*already, f2], timeout=GET, return_when=FIRST_COMPLETED)
        assert finished == already
        assert pending == {f2}


def test_wait_first_exception(tmp_path: Path) -> None:
    with RobustExecutor(2, start_method=FAST) as executor, released(tmp_path / "release") as release:
        f1 = executor.submit(mul, 2, 21)
        assert f1.result(timeout=GET) == 42
        f2: Future[Any] = executor.submit(sleep_and_raise, 0.3)
        f3: Future[Any] = executor.submit(wait_for, str(release))
        finished, pending = wait([f1, f2, f3], timeout=GET, return_when=FIRST_EXCEPTION)
        assert finished == {f1, f2}
        assert pending == {f3}
        assert isinstance(f2.exception(timeout=0), ValueError)

        successful, cancelled, notified = _finished("successful"), _finished("cancelled"), _finished("cancelled-and-notified")
        f4 = executor.submit(divmod, 21, 0)
        finished, pending = wait([successful, cancelled, notified, f4, f3], timeout=GET, return_when=FIRST_EXCEPTION)
        assert finished == {successful, notified, f4}
        assert pending == {cancelled, f3}

        failed = _finished("exception")
        finished, pending = wait([failed, f3], timeout=GET, return_when=FIRST_EXCEPTION)
        assert finished == {failed}
        assert pending == {f3}


def test_wait_first_exception_counts_a_lost_worker(tmp_path: Path) -> None:
    with RobustExecutor(2, start_method=FAST) as executor, released(tmp_path / "release") as release:
        blocker = executor.submit(wait_for, str(release))
        killer = executor.submit(sigkill_self)
        finished, pending = wait([blocker, killer], timeout=GET, return_when=FIRST_EXCEPTION)
        assert finished == {killer} and pending == {blocker}
        err = killer.exception(timeout=0)
        assert isinstance(err, WorkerLostError) and err.signal is signal.SIGKILL
        release.touch()
        assert blocker.result(timeout=GET) is None


def test_wait_all_completed_and_timeout(tmp_path: Path) -> None:
    successful, notified, failed = _finished("successful"), _finished("cancelled-and-notified"), _finished("exception")
    with RobustExecutor(2, start_method=FAST) as executor, released(tmp_path / "release") as release:
        f1 = executor.submit(divmod, 2, 0)
        f2 = executor.submit(mul, 2, 21)
        everything = {successful, notified, failed, f1, f2}
        finished, pending = wait(everything, timeout=GET, return_when=ALL_COMPLETED)
        assert finished == everything and pending == set()

        # The same future twice (CPython issue 20369).
        f3 = executor.submit(sleep_return, 0.3)
        finished, pending = wait([f3, f3], timeout=GET, return_when=ALL_COMPLETED)
        assert finished == {f3} and pending == set()

        blocker = executor.submit(wait_for, str(release))
        finished, pending = wait([notified, failed, successful, blocker], timeout=0.05, return_when=ALL_COMPLETED)
        assert finished == {notified, failed, successful}
        assert pending == {blocker}


def test_as_completed_over_100_futures_with_one_sigkill() -> None:
    bad = 37
    with RobustExecutor(2) as executor:
        futures: dict[Future[int], int] = {executor.submit(square_or_sigkill, bad, x): x for x in range(100)}
        ok = 0
        lost: list[tuple[int, WorkerLostError]] = []
        for future in as_completed(futures, timeout=GET):
            try:
                assert future.result(timeout=0) == futures[future] ** 2
                ok += 1
            except WorkerLostError as exc:
                lost.append((futures[future], exc))
        assert ok == 99
        assert [x for x, _ in lost] == [bad]
        err = lost[0][1]
        assert err.signal is signal.SIGKILL and err.exitcode == -signal.SIGKILL
        assert err.task is not None and err.task.startswith("square_or_sigkill(")
        value = executor.submit(square, 12).result(timeout=GET)
        assert value == 144
        wait_until(lambda: dict(executor.stats().replaced) == {"SIGKILL (-9)": 1}, "stats() to count the one death")
    print(f"results={ok} lost={len(lost)} (item {lost[0][0]}: {signal.Signals(-err.exitcode).name}) next={value}")


def test_futures_mix_with_other_executors_futures() -> None:
    # as_completed and wait take futures of any executor at once.
    with RobustExecutor(1, start_method=FAST) as executor, concurrent.futures.ThreadPoolExecutor(1) as threads:
        ours = executor.submit(square, 6)
        theirs = threads.submit(square, 7)
        assert {f.result(timeout=0) for f in as_completed([ours, theirs], timeout=GET)} == {36, 49}
