"""Functions the Dask tests run in workers (module level: the workers import them by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def hog(mib: int) -> int:
    """Hold ``mib`` MiB for a few seconds: long enough for the memory watch to see it."""
    block = bytearray(mib * 2**20)
    for k in range(0, len(block), 4096):
        block[k] = 1  # touch every page: resident, not just reserved
    time.sleep(5)
    return len(block)


def die_once(marker: str) -> int:
    """SIGKILL its process the first time (leaving ``marker``), succeed the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), 9)
    return os.getpid()


def write_file_for(args: tuple[str, int]) -> str:
    """Make a temp file for item ``i`` in ``directory`` (the cleanup pipeline); its path."""
    directory, i = args
    path = Path(directory) / f"item-{i}.txt"
    path.write_text(str(i))
    return str(path)


def sleep_then_mark(seconds: float, marker: str) -> str:
    time.sleep(seconds)
    Path(marker).write_text("ran to the end")
    return marker


def slow_square(x: int) -> int:
    time.sleep(0.05)
    return x * x
