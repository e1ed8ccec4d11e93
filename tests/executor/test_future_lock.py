"""RobustFuture's own condition (one RLock instead of a threading.Condition): waiting,
timing out, waking many waiters, and the reentrancy concurrent.futures.wait relies on."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, TimeoutError, as_completed, wait
from typing import Any

import pytest

from robustpool import RobustFuture


def _waiters(f: RobustFuture[Any]) -> list[Any]:
    return getattr(f._condition, "_waiters", None) or []


def test_result_times_out_then_a_later_result_is_seen() -> None:
    f: RobustFuture[int] = RobustFuture()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        f.result(timeout=0.05)
    assert 0.04 <= time.monotonic() - start < 2.0
    assert not _waiters(f)  # the timed-out waiter was removed
    f.set_result(7)
    assert f.result(timeout=0) == 7


def test_one_result_wakes_every_waiting_thread() -> None:
    f: RobustFuture[str] = RobustFuture()
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(f.result(timeout=10))) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(_waiters(f)) < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    f.set_result("done")
    for t in threads:
        t.join(10)
    assert got == ["done"] * 8


def test_wait_and_as_completed_hold_many_futures_at_once() -> None:
    fs: list[Future[int]] = [RobustFuture() for _ in range(5)]
    fs[3].set_exception(ValueError("three"))
    done, pending = wait(fs, timeout=5, return_when="FIRST_EXCEPTION")  # reenters each lock
    assert done == {fs[3]} and len(pending) == 4

    def finish_the_rest() -> None:
        for i, f in enumerate(fs):
            if i != 3:
                f.set_result(i)

    threading.Timer(0.05, finish_the_rest).start()
    assert len(list(as_completed(fs, timeout=5))) == 5
    done, _ = wait(fs, timeout=0, return_when=FIRST_COMPLETED)
    assert done == set(fs)
