"""The workers' life: ``initializer`` in every worker (one that keeps failing breaks the
executor with InitializerError, a ``BrokenExecutor``), ``max_tasks_per_child`` recycling,
after CPython's ``test_init.py`` and ``test_process_pool.py``."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import BrokenExecutor
from pathlib import Path

import pytest

from robustpool import InitializerError, RobustExecutor, RobustPoolError

from .workers import FAST, GET, init, init_fail, init_status, mul, pid_of, square, wait_until


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_initializer_runs_in_every_worker(start_method: str) -> None:
    with RobustExecutor(2, initializer=init, initargs=("initialized",), start_method=start_method) as executor:
        statuses = [f.result(timeout=GET) for f in [executor.submit(init_status) for _ in range(10)]]
        assert {status for status, _ in statuses} == {"initialized"}
        assert {pid for _, pid in statuses} <= set(executor.worker_pids())


def test_failing_initializer_breaks_the_executor(tmp_path: Path) -> None:
    marker = tmp_path / "attempts"
    with RobustExecutor(2, initializer=init_fail, initargs=(str(marker),)) as executor:
        future = executor.submit(square, 3)
        t0 = time.monotonic()
        try:
            future.result(timeout=GET)
        except BrokenExecutor as exc:  # what code written for ProcessPoolExecutor catches
            err: BaseException = exc
        else:
            pytest.fail("a future of a broken executor succeeded")
        assert time.monotonic() - t0 < 20
        assert type(err) is InitializerError
        assert isinstance(err, RobustPoolError)
        assert err.failures >= 3
        assert "ValueError: error in initializer" in err.remote_traceback
        assert "error in initializer" in str(err)
        # From now on every submit fails the same way: refused, or a future that fails.
        for x in range(3):
            try:
                later = executor.submit(square, x)
            except BrokenExecutor:
                continue
            with pytest.raises(BrokenExecutor):
                later.result(timeout=GET)
        # No endless respawning: the attempts stop (a worker that was already starting
        # when the executor broke may still run its initializer once).
        time.sleep(0.5)
        attempts = len(marker.read_text().splitlines())
        time.sleep(0.5)
        assert len(marker.read_text().splitlines()) == attempts
        assert 3 <= attempts <= 3 + 2


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_max_tasks_per_child_replaces_the_worker(start_method: str) -> None:
    # Unlike ProcessPoolExecutor, fork is allowed: workers are started by the supervisor.
    with RobustExecutor(1, max_tasks_per_child=3, start_method=start_method) as executor:
        pids = [executor.submit(pid_of).result(timeout=GET) for _ in range(7)]
        assert pids[0] == pids[1] == pids[2]
        assert pids[3] == pids[4] == pids[5] != pids[0]
        assert pids[6] not in (pids[0], pids[3])
        # When the seventh result arrives the second worker may still be on its way out, and
        # the supervisor's word of the third one's pid may not have arrived yet.
        wait_until(lambda: executor.worker_pids() == [pids[6]], "only the third worker left")
        assert dict(executor.stats().replaced) == {"recycled (maxtasksperchild)": 2}


def test_max_tasks_per_child_with_many_workers_and_the_initializer() -> None:
    with RobustExecutor(
        2, None, init, ("recycled",), 2, start_method=FAST
    ) as executor:  # positional, in ProcessPoolExecutor's order
        statuses = [f.result(timeout=GET) for f in [executor.submit(init_status) for _ in range(12)]]
    assert {status for status, _ in statuses} == {"recycled"}
    per_pid = Counter(pid for _, pid in statuses)
    assert len(per_pid) >= 6 and max(per_pid.values()) <= 2


def test_max_tasks_per_child_then_early_shutdown() -> None:
    executor = RobustExecutor(3, start_method=FAST, max_tasks_per_child=1)
    futures = [executor.submit(mul, i, i) for i in range(6)]
    executor.shutdown()
    assert [f.result(timeout=0) for f in futures] == [i * i for i in range(6)]
