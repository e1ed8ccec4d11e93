"""What the cleanup tests share: everything a worker runs, and the owner's helpers.

Workers receive the functions by reference (``cleanup._support._square``), so this module
must stay importable by that name in a fresh interpreter: a spawned supervisor gets the
owner's ``sys.path``, on which pytest puts ``tests/`` for the ``cleanup`` package.
Everything a worker runs is defined here, at module level, and nothing a worker needs is
defined in a test module. The owner's side follows: the consumer's error, the counting
input, bounded iteration and waiting, used by several modules; ``GET`` bounds every wait for
a result that should arrive promptly.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from robustpool import IMapIterator

_T = TypeVar("_T")

GET = 30.0  # bound for any result that should arrive promptly
SQUARES_BUT_13 = sorted(x * x for x in range(20) if x != 13)


# --------------------------------------------------------------------------------------
# What runs in the workers (module level, so a spawned supervisor can import it)
# --------------------------------------------------------------------------------------


def _write_square(directory: str, x: int) -> str:
    """The pipeline's mapper: ``x*x`` into a fresh temp file; returns its path."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=f"sq{x:04d}-")
    with os.fdopen(fd, "w") as f:
        f.write(str(x * x))
    return path


def _identity(x: int) -> int:
    return x


def _square(x: int) -> int:
    return x * x


def _kill_self() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)
    raise AssertionError("SIGKILL did not kill the worker")


def _fail_at_6(x: int) -> int:
    if x == 6:
        raise ValueError(f"item {x} is bad")
    return x * x


def _kill_at_6(x: int) -> int:
    if x == 6:
        _kill_self()
    return x * x


def _square_unless_13(x: int) -> int:
    if x == 13:
        raise ValueError("item 13 is bad")
    return x * x


def _mul_unless_13(a: int, b: int) -> int:
    if a == 13:
        raise ValueError("item 13 is bad")
    return a * b


def _slow_unless_0(x: int) -> int:
    time.sleep(0.4 if x else 0.0)
    return x


def _token_task(marker_dir: str, fails: frozenset[int], kill: int | None, x: int) -> int:
    """Hypothesis mapper: returns the token ``x``; raises for ``fails``; SIGKILLs its
    worker for ``kill``. A completed run leaves ``ran-X-PID``; a killer leaves
    ``killer-PID`` first, so runs lost with a killed worker can be told apart."""
    if x == kill:
        Path(marker_dir, f"killer-{os.getpid()}").touch()
        _kill_self()
    if x in fails:
        raise ValueError(x)
    Path(marker_dir, f"ran-{x}-{os.getpid()}").touch()
    return x


def _marked_slow(marker_dir: str, x: int) -> int:
    """Leaves ``started-X`` when it starts, then takes 0.5 s."""
    Path(marker_dir, f"started-{x}").touch()
    time.sleep(0.5)
    return x


def _nbytes(data: bytes) -> int:
    return len(data)


def _refuse_in(owner_pid: int) -> str:
    if os.getpid() == owner_pid:
        raise ValueError("refuse to be unpickled in the owner")
    return "rebuilt elsewhere"


class _OwnerRefuses:
    """A result that pickles in the worker but cannot be rebuilt in the owner."""

    def __init__(self, owner_pid: int) -> None:
        self.owner_pid = owner_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_in, (self.owner_pid,))


def _file_or_refuse(directory: str, owner_pid: int, x: int) -> Any:
    """Item 5 returns what the owner cannot unpickle; every other item leaves a temp file."""
    if x == 5:
        return _OwnerRefuses(owner_pid)
    return _write_square(directory, x)


# --------------------------------------------------------------------------------------
# The owner's side
# --------------------------------------------------------------------------------------


class ConsumerError(Exception):
    """Raised by a test's consumer to leave the ``with`` blocks by an exception."""


def _counting(counter: list[int], source: Iterable[_T]) -> Iterator[_T]:
    """Yield from ``source``, counting in ``counter[0]`` how many items were pulled."""
    for x in source:
        counter[0] += 1
        yield x


def _bounded(it: IMapIterator[Any], timeout: float = GET) -> Iterator[Any]:
    """Iterate ``it`` with a bounded wait for every result."""
    while True:
        try:
            value = it.next(timeout=timeout)
        except StopIteration:
            return
        yield value


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
