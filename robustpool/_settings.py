"""Validation of pool settings, so every bad value is refused at the call with a clear error."""

from __future__ import annotations

import math
import re

# The most workers one pool runs. A machine with more cores than this is rare, and a pool
# beyond it is more likely a typo (processes=10**6) than a plan.
MAX_PROCESSES = 4096
_FDS_PER_WORKER = 2  # in the owner: the worker's socket, and its progress slot's mapping
_FDS_SPARE = 64  # left for the owner's own use

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: int | str | None) -> int | None:
    """Bytes from an int or a string such as ``"512MiB"``, ``"2GB"`` or ``"1.5G"``.

    ``K``/``M``/``G``/``T`` and ``KiB``/``MiB``/... are powers of 1024; ``KB``/``MB``/...
    are powers of 1000.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("memory_limit must be a number of bytes or a string like '2GB', not a bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        match = _MEMORY.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"cannot parse memory_limit {value!r}: use bytes or a size like '512MiB', '2GB', '1.5G'")
        number = int(float(match.group(1)) * _UNITS[unit])
    else:
        raise TypeError(f"memory_limit must be an int or a str, not {type(value).__name__}")
    if number <= 0:
        raise ValueError(f"memory_limit must be positive, not {value!r}")
    return number


# The longest finite limit accepted: about 31 years. Far beyond any real limit, and small
# enough that a deadline in nanoseconds on the monotonic clock fits the progress slot's int64.
MAX_SECONDS = 1e9


def seconds(name: str, value: float | None) -> float:
    """A positive number of seconds; ``math.inf`` (or None) means no limit and gives inf."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if math.isnan(value) or not value > 0:
        raise ValueError(f"{name} must be > 0 seconds, not {value!r}")
    if value > MAX_SECONDS and not math.isinf(value):
        raise ValueError(f"{name}={value!r} is too large (at most {MAX_SECONDS:g} s); use None or math.inf for no limit")
    return float(value)


def task_limit(name: str, value: float | None) -> float:
    """A task's time limit as the wire carries it: seconds, or 0.0 for no limit."""
    limit = seconds(name, value)
    return 0.0 if math.isinf(limit) else limit


def max_processes() -> int:
    """How many workers one pool may have in this process: MAX_PROCESSES, fewer when the
    descriptor limit (RLIMIT_NOFILE) would run out first."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return MAX_PROCESSES
    if soft == resource.RLIM_INFINITY:
        return MAX_PROCESSES
    return max(1, min(MAX_PROCESSES, (soft - _FDS_SPARE) // _FDS_PER_WORKER))


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be 1 or more, not {value}")
    return value
