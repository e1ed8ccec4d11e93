"""Smoke test of the chaos runner: a short seeded run must hold every invariant.

Runs ``python -m stress`` as a subprocess (its own process tree, its own watchdog) for about
ten seconds with a fixed seed and checks the exit code and the report lines. A failure here
prints the whole report, whose first line is the seed to replay it with.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED = 20240611
SECONDS = 10
INVARIANTS = ("lost 0", "duplicates 0", "wrong values 0", "wrong errors 0", "hangs 0", "leaked processes 0", "shm entries left 0")


@pytest.mark.timeout(SECONDS + 150)
def test_short_seeded_run_holds_every_invariant() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stress", "--seconds", str(SECONDS), "--seed", str(SEED)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SECONDS + 140,  # the runner's own watchdog fires at +60 s, and its final checks are bounded
    )
    report = proc.stdout
    lines = set(report.splitlines())
    assert report.startswith(f"seed {SEED}\n"), report
    assert proc.returncode == 0, f"the stress run failed (exit {proc.returncode}):\n{report}\n{proc.stderr[-3000:]}"
    for line in INVARIANTS:
        assert line in lines, f"{line!r} missing from the report:\n{report}"
    assert "RESULT OK" in lines, report
    submitted = next(int(x.split()[-1]) for x in lines if x.startswith("tasks submitted "))
    assert submitted > 100, report
