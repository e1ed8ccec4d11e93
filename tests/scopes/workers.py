"""Functions the scope tests run in worker processes (importable by reference under spawn)."""

from __future__ import annotations

import time
from typing import Any, TypeVar

T = TypeVar("T")


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def sleep_then(seconds: float, value: T) -> T:
    time.sleep(seconds)
    return value


def wait_running(pool: Any, n: int, timeout: float = 10.0) -> None:
    """Until the pool's stats show ``n`` tasks handed to workers (bounded)."""
    deadline = time.monotonic() + timeout
    while sum(w.tasks for w in pool.stats().workers) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {n} tasks running after {timeout} s")
        time.sleep(0.01)
    time.sleep(0.1)  # the worker has had time to begin it
