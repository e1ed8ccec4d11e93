"""A closed pool's supervisor is reaped later, never left: at the next pool's start, or at exit.

``join()`` after ``close()`` returns once every worker has quit, without waiting for the
kernel's teardown of the processes (``robustpool._process._reaper``). These tests check the
other half of that promise: nothing is left behind, as a zombie or otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from robustpool import RobustPool
from robustpool._process import _reaper

REPO = Path(__file__).resolve().parent.parent.parent


def _gone_or_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _reaped(pid: int) -> bool:
    """Not even a zombie is left (or the pid was reused by a process that is not ours)."""
    try:
        return psutil.Process(pid).ppid() != os.getpid()
    except psutil.NoSuchProcess:
        return True


def test_a_closed_pools_supervisor_is_reaped_at_the_next_start() -> None:
    with RobustPool(2, start_method="fork") as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        first = pool.supervisor_pid
        workers = pool.worker_pids()
    deadline = time.monotonic() + 10
    while not all(_gone_or_zombie(p) for p in [first, *workers]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(_gone_or_zombie(p) for p in [first, *workers])
    with RobustPool(1, start_method="fork") as again:  # its start reaps the first supervisor
        assert again.apply(abs, (-3,)) == 3
        assert _reaped(first)
    _reaper.reap_all(10.0)
    assert _reaper.pending() == 0


def test_an_owner_that_exits_right_after_with_leaves_nothing(tmp_path: Path) -> None:
    """The owner's exit waits, bounded, for the supervisors still exiting: none is orphaned
    (it would be reparented to init and outlive the owner), none outlives the run."""
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from robustpool import RobustPool
            with RobustPool(2) as pool:
                pool.map(abs, range(-50, 0))
                print(pool.supervisor_pid, *pool.worker_pids(), flush=True)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "ROBUSTPOOL_ZYGOTE": "0"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 3
    assert not [p for p in pids if psutil.pid_exists(p) and not _gone_or_zombie(p)], "outlived the owner"
