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


def test_demo_attributes_the_death_and_carries_on() -> None:
    done = subprocess.run([sys.executable, "-m", "robustpool", "demo"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "19 results delivered, 1 attributed failure" in done.stdout
    assert "died from SIGKILL (-9) while running task #7 work(7)" in done.stdout
