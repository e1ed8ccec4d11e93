"""mypy --strict on one snippet, in a child process.

mypy run through its API in the test process leaves hundreds of thousands of objects
behind, and every later full garbage collection in the session pays for them (the stateful
machine ran four times slower after it). A child keeps the session's heap as it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def mypy_strict(source: Path, cache_dir: Path, timeout: float = 110.0) -> tuple[str, int]:
    """mypy's report (stdout + stderr) and exit status for ``source``."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(cache_dir),
            "--python-version",
            "3.11",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.stdout + proc.stderr, proc.returncode
