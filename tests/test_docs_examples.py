"""The documentation's examples run, and say what the docs say they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tempfile_pipeline_leaves_nothing_behind() -> None:
    script = ROOT / "docs" / "examples" / "tempfile_pipeline.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "stopped early: the consumer failed at item 3" in done.stdout
    assert "files left behind: 0" in done.stdout


def test_demo_runs_the_chaos_pipeline_and_measures_the_standard_library() -> None:
    done = subprocess.run([sys.executable, "-m", "robustpool", "demo"], capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "died from SIGKILL (-9) while running task #2 work(2)" in out
    assert "died from SIGSEGV (-11) while running task #4 work(4)" in out
    assert "died from exit code 3 while running task #6 work(6)" in out
    assert "item  8: ValueError: a bad record" in out
    assert "TaskTimeoutError: task #9 work(9) ran for" in out
    assert "items delivered      22 of the 32 consumed" in out
    assert "temp files left      0" in out
    assert "workers replaced     8 (2 SIGKILL (-9), 2 SIGSEGV (-11), 2 exit code 3, 2 timeout)" in out
    # The standard library, run at the same fault: measured, so it says what happened.
    assert "multiprocessing.Pool.imap:   3 results, then nothing for 3 s: it waits forever" in out
    assert "futures failed with BrokenProcessPool for one death; a new task raises BrokenProcessPool" in out
    assert not done.stderr.strip(), done.stderr  # no log noise, no faulthandler dump


def _run_example(name: str) -> str:
    script = ROOT / "docs" / "examples" / name
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_executor_example_fails_one_future_and_stops_a_cancelled_one() -> None:
    out = _run_example("executor_as_completed.py")
    assert "99 results, lost: [(37, 'SIGKILL')]" in out
    assert "the executor goes on: square(12) = 144" in out
    assert "cancel() of a running future: True, cancelled: True" in out
    assert "'cancelled': 1" in out


def test_asyncio_example_awaits_everything_and_never_blocks_the_loop() -> None:
    out = _run_example("asyncio_pool.py")
    for line in (
        "apply_async: 49",
        "map_async: [0, 1, 4, 9, 16]",
        "submit: 81",
        "50 awaited at once: 50 results",
        "async for: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "wait_for timed out; the 60 s task was stopped",
        "the pool goes on: 144",
    ):
        assert line in out
    gap_ms = int(out.rsplit("the longest gap ", 1)[1].split()[0])
    assert gap_ms < 1000, out  # the loop was never blocked for long (pool start included)


def test_disk_ssd_scope_keeps_each_pools_parallelism() -> None:
    out = _run_example("disk_ssd_scope.py")
    assert "disk: 1 thread, at most 1 at once (pool of 1)" in out
    assert "ssd: 8 threads, at most 8 at once (pool of 8)" in out
    processes = int(out.split("cpu: ", 1)[1].split()[0])
    assert 1 <= processes <= 2 and "worker processes (pool of 2)" in out  # never more than its size
    assert "46 reads and 8 checksums done" in out
    assert "scope failed: ['TypeError'];" in out
    cancelled = int(out.split("scope failed: ['TypeError']; ", 1)[1].split()[0])
    assert 5 <= cancelled <= 10, out  # the serial disk had started at most a few of the ten
