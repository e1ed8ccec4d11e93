"""A pool's configuration, validated once for every facade, so every bad value is refused
at the call with a clear error.

The rule for errors: a value of the wrong type raises ``TypeError``, a value of the right type
that is out of range raises ``ValueError``. One exception, for code written for
``multiprocessing.Pool``: a ``maxtasksperchild`` of the wrong type raises an error that is both
(the standard library raises ``ValueError`` there).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

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


class _WrongType(TypeError, ValueError):
    """A wrong type where ``multiprocessing.Pool`` raises ValueError (see the module doc)."""


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


def positive_int(name: str, value: object, wrong_type: type[TypeError] = TypeError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be 1 or more, not {value}")
    return value


@dataclass(frozen=True, slots=True)
class Names:
    """What a facade calls the parameters its errors name (the executor follows
    ``ProcessPoolExecutor``'s names and error types, the pool ``multiprocessing.Pool``'s)."""

    processes: str = "processes"
    maxtasksperchild: str = "maxtasksperchild"
    context: str = "context"
    too_few: str = "Number of processes must be at least 1"
    tasks_wrong_type: type[TypeError] = _WrongType


EXECUTOR_NAMES = Names("max_workers", "max_tasks_per_child", "mp_context", "max_workers must be greater than 0", TypeError)


def _processes(value: int | None, names: Names, default: int | None, fds: bool) -> int:
    if value is None:
        return default or os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{names.processes} must be an int or None, not {type(value).__name__}")
    if value < 1:
        raise ValueError(names.too_few)
    most = max_processes() if fds else MAX_PROCESSES
    if value > most and not fds:
        raise ValueError(f"{names.processes}={value} is more than robustpool runs: at most {MAX_PROCESSES} threads per pool")
    if value > most:
        raise ValueError(
            f"{names.processes}={value} is more than this process can run: at most {most} here (each worker needs two "
            f"file descriptors in the owner, and robustpool runs at most {MAX_PROCESSES} workers per pool)"
        )
    return value


def _start_method(context: Any, start_method: str | None, names: Names) -> str | None:
    """The supervisor's start method, from ``start_method`` or a ``multiprocessing``
    context (``multiprocessing.Pool``'s ``context=``)."""
    if start_method is not None and not isinstance(start_method, str):
        raise TypeError(f"start_method must be a str or None, not {type(start_method).__name__}")
    if start_method not in (None, "fork", "forkserver", "spawn"):
        raise ValueError(f"start_method must be 'fork', 'forkserver', 'spawn' or None, not {start_method!r}")
    if start_method in ("fork", "forkserver") and not hasattr(os, "fork"):
        raise ValueError(f"start_method={start_method!r} needs os.fork, which this platform lacks")
    if context is None:
        return start_method
    get = getattr(context, "get_start_method", None)
    if not callable(get):
        raise TypeError(f"{names.context} must be a multiprocessing context, not {type(context).__name__}")
    method = get()
    from_context = method if method in ("fork", "forkserver") else "spawn"
    if start_method is not None and start_method != from_context:
        raise ValueError(f"start_method={start_method!r} contradicts the context's start method {method!r}")
    return from_context


def check_callable(fn: object, what: str = "func") -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be callable, not {type(fn).__name__}")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Every parameter of a pool, validated (see :meth:`build`). Engines read it; nobody
    changes it. ``task_timeout`` is seconds, 0.0 for no limit; ``close_timeout`` may be inf."""

    processes: int
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    maxtasksperchild: int | None
    task_timeout: float
    retries: int
    memory_limit: int | None
    start_method: str | None
    buffersize: int
    close_timeout: float

    @classmethod
    def build(
        cls,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        memory_limit: int | str | None = None,
        start_method: str | None = None,
        buffersize: int | None = None,
        close_timeout: float | None = 10.0,
        names: Names = Names(),
        default_workers: int | None = None,
        threads: bool = False,
        default_buffersize: Callable[[int], int] | None = None,
    ) -> PoolConfig:
        """Validate every parameter. ``default_workers`` replaces ``os.cpu_count()`` as the
        default size; ``threads``: the workers are threads (no descriptors per worker);
        ``default_buffersize``: the window for a size, when ``buffersize`` is None (an engine
        whose round trips are slow keeps more ahead)."""
        nproc = _processes(processes, names, default_workers, not threads)
        if initializer is not None:
            check_callable(initializer, "initializer")
        try:
            init_args = tuple(initargs)
        except TypeError:
            raise TypeError(f"initargs must be an iterable of arguments for the initializer, not {type(initargs).__name__}")
        if maxtasksperchild is not None:
            positive_int(names.maxtasksperchild, maxtasksperchild, names.tasks_wrong_type)
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries must be an int, not {type(retries).__name__}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        method = _start_method(context, start_method, names)
        # Threads keep more ahead: they share the consumer's GIL, so a consumer that drains
        # the window sleeps and is woken (a thread switch per refill), and what they hold
        # ahead is results only (their input is never copied).
        if default_buffersize is not None:
            default_window = default_buffersize(nproc)
        else:
            default_window = max(256, 32 * nproc) if threads else max(64, 32 * nproc)
        window = positive_int("buffersize", buffersize) if buffersize is not None else default_window
        return cls(
            nproc,
            initializer,
            init_args,
            maxtasksperchild,
            task_limit("task_timeout", task_timeout),
            retries,
            parse_memory(memory_limit),
            method,
            window,
            seconds("close_timeout", close_timeout),
        )
