"""Work functions sent to the pools.

They live at module level in an importable module so every peer can pickle them by
reference, whatever its start method (fork, spawn, loky's fork+exec).
"""

from __future__ import annotations

import os
import signal
import time


def double(x: int) -> int:
    """The tiny task: almost no work, so the pool's own overhead dominates."""
    return x * 2


def noop(x: int = 0) -> int:
    """A trivial task used to warm pools and to detect that a pool answers."""
    return x


def echo(data: bytes) -> bytes:
    """Return the argument unchanged: the payload travels in and back out."""
    return data


def warm(delay: float) -> int:
    """Sleep a little and return the worker's pid, so a batch of these occupies every worker."""
    time.sleep(delay)
    return os.getpid()


def spin(loops: int) -> int:
    """Pure-Python CPU work: ``loops`` iterations of integer arithmetic (holds the GIL)."""
    acc = 0
    for i in range(loops):
        acc = (acc + i * i) % 1_000_003
    return acc


def kill_self(stamp_path: str) -> None:
    """Write ``time.monotonic()`` (system-wide on Linux) to ``stamp_path``, then SIGKILL this worker."""
    with open(stamp_path, "w", encoding="ascii") as f:
        f.write(repr(time.monotonic()))
    os.kill(os.getpid(), signal.SIGKILL)
