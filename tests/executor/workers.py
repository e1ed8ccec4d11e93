"""What the executor tests hand to workers: functions, classes and exceptions, at module level.

Workers receive these by reference (``executor.workers.mul``): under pytest the default start
method is spawn, and a spawned supervisor imports them by this module's name (pytest puts
``tests/`` on ``sys.path`` for the ``executor`` package, and a spawned child inherits it).
Keep it free of test machinery: no pytest, no fixtures, nothing that runs at import.

Long tasks never just sleep: they wait for a file the test creates when it is done with them
(``wait_for``), so a test ends as soon as it has seen what it wanted, however loaded the
machine is, and a forgotten one ends after ``LIMIT`` seconds instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import psutil

LIMIT = 45.0  # seconds: the longest any task here blocks (below pytest-timeout's 60)

# --------------------------------------------------------------------------------------
# Plain tasks
# --------------------------------------------------------------------------------------


def mul(x: int, y: int) -> int:
    return x * y


def square(x: int) -> int:
    return x * x


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Returns exactly what it was called with (``submit``'s own parameter names included)."""
    return args, kwargs


def pid_of(_: object = None) -> int:
    return os.getpid()


def sleep_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def sleep_and_raise(seconds: float) -> NoReturn:
    time.sleep(seconds)
    raise ValueError(f"failed on purpose after {seconds} s")


def raise_runtime_error(code: int) -> NoReturn:
    raise RuntimeError(code)  # a line the traceback test looks for


def wait_for(path: str, value: Any = None) -> Any:
    """Block until ``path`` exists (the test's word to finish), at most LIMIT seconds."""
    deadline = time.monotonic() + LIMIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


def announce_then_wait(started: str, release: str, value: Any = None) -> Any:
    """Write this worker's pid to ``started`` (atomically), then ``wait_for(release)``."""
    tmp = f"{started}.{os.getpid()}.tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, started)
    return wait_for(release, value)


def write_square(directory: str, x: int) -> str:
    """``x*x`` into a fresh file of ``directory``; returns its path (what ``cleanup`` removes)."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=f"sq{x:05d}-")
    with os.fdopen(fd, "w") as f:
        f.write(str(x * x))
    return path


def write_square_unless(bad: int, directory: str, x: int) -> str:
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return write_square(directory, x)


class MyObject:
    def method(self) -> None:
        pass


def make_object(_: object) -> MyObject:
    return MyObject()


# --------------------------------------------------------------------------------------
# Initializers
# --------------------------------------------------------------------------------------

_INIT_STATUS = "uninitialized"


def init(value: str) -> None:
    global _INIT_STATUS
    _INIT_STATUS = value


def init_status(_: object = None) -> tuple[str, int]:
    return _INIT_STATUS, os.getpid()


def init_fail(marker: str) -> NoReturn:
    """Leaves one line per attempt in ``marker``, then fails."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    raise ValueError("error in initializer")


# --------------------------------------------------------------------------------------
# Crashes: the ways a task's trip can go wrong (see test_crash_matrix)
# --------------------------------------------------------------------------------------


class Boom(Exception):
    """The plain, picklable exception raised on purpose."""


def fault(mode: str) -> None:
    """Misbehave: ``segfault``, ``os_exit`` (code 3), ``sys_exit`` (code 4), ``sigkill``,
    ``sigterm`` or ``error`` (raise Boom)."""
    if mode == "segfault":
        faulthandler.disable()  # inherited under fork: keep the dump off the test's stderr
        faulthandler._sigsegv()  # type: ignore[attr-defined]
    elif mode == "os_exit":
        os._exit(3)
    elif mode == "sys_exit":
        sys.exit(4)
    elif mode in ("sigkill", "sigterm"):
        os.kill(os.getpid(), signal.SIGKILL if mode == "sigkill" else signal.SIGTERM)
        time.sleep(LIMIT)
    elif mode == "error":
        raise Boom(f"{mode} on purpose in pid {os.getpid()}")
    raise AssertionError(f"fault {mode!r} did not fire")


def sleep_then_fault(seconds: float, mode: str) -> None:
    time.sleep(seconds)
    fault(mode)


def sigkill_self() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(LIMIT)
    raise AssertionError("SIGKILL did not kill the worker")


def square_or_sigkill(bad: int, x: int) -> int:
    if x == bad:
        sigkill_self()
    return x * x


def crash_with_data(data: bytes) -> NoReturn:
    """A segfault with a big argument on its way in."""
    fault("segfault")
    raise AssertionError("unreachable")


def _rebuild_faulty(mode: str) -> int:
    fault(mode)
    return -1


class TaskBomb:
    """An argument that pickles in the owner and misbehaves as the worker unpickles it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_faulty, (self.mode,))


class Unpicklable:
    """An argument whose pickling fails in the owner."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise Boom("refuse to be pickled in the owner")


class ResultBomb:
    """A result that misbehaves as the worker pickles it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __reduce__(self) -> tuple[Any, ...]:
        fault(self.mode)
        return (str, ("never",))


def _rebuild_in_owner(mode: str, owner_pid: int) -> str:
    # The owner's pid comes with the object: under fork every worker has the owner's globals.
    if os.getpid() == owner_pid:
        if mode == "error":
            raise Boom("refuse to be unpickled in the owner")
        raise SystemExit(5)
    return "rebuilt outside the owner"


class OwnerBomb:
    """A result that pickles in the worker and misbehaves as the owner unpickles it."""

    def __init__(self, mode: str, owner_pid: int) -> None:
        self.mode = mode
        self.owner_pid = owner_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_in_owner, (self.mode, self.owner_pid))


class UnrebuildableError(Exception):
    """Raised in the worker; pickles there, but unpickling it in the owner fails."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_faulty, ("error",))


def work(x: Any) -> Any:
    """The crash matrix's one task. An int is squared, bytes give their length, and an
    ``(action, argument)`` pair misbehaves (or takes its time) as the row asks."""
    if isinstance(x, int):
        return x * x
    if isinstance(x, bytes):
        return len(x)
    action, arg = x
    if action == "fault":
        fault(arg)
    elif action == "raise-unrebuildable":
        raise UnrebuildableError(arg)
    elif action == "result":
        return ResultBomb(arg)
    elif action == "owner":
        mode, owner_pid = arg
        return OwnerBomb(mode, owner_pid)
    elif action == "make":
        return b"y" * arg
    elif action == "wait":
        return wait_for(arg, f"released by {os.path.basename(arg)}")
    elif action == "sleep-then-sigkill":
        time.sleep(arg)
        sigkill_self()
    raise AssertionError(f"unknown action {action!r}")


def failing_initializer(tag: str) -> NoReturn:
    raise Boom(f"initializer {tag} fails on purpose")


def shrink_frames() -> None:
    """Initializer: lower the worker's frame limit to 1 MiB, so 2 MiB stands for 4 GiB."""
    import robustpool._process._wire as wire

    wire.MAX_FRAME = 1 << 20


def spoil_reply(x: Any) -> Any:
    """An int is squared; ``(how, arg)`` computes a result, then spoils its trip back."""
    if isinstance(x, int):
        return x * x
    how, arg = x
    time.sleep(0.01)
    if how == "close-fds":
        os.closerange(3, 65536)
    elif how == "devnull-fds":
        null = os.open(os.devnull, os.O_RDWR)
        for fd in range(3, 101):
            if fd != null:
                with contextlib.suppress(OSError):
                    os.dup2(null, fd)
    elif how == "garbage":
        for fd in range(3, 101):
            with contextlib.suppress(OSError):
                os.write(fd, b"garbage" * 100)
        time.sleep(LIMIT)
    elif how == "big":
        return b"z" * arg
    return f"spoiled by {how}"


# --------------------------------------------------------------------------------------
# The owner's side, shared by the test modules (plain functions, no pytest)
# --------------------------------------------------------------------------------------

GET = 30.0  # seconds: the bound on any wait for something that should happen promptly
PROMPT = 5.0  # seconds: "at once", on a loaded 2-core machine

# The start method of the tests for which it is not the point: a forked supervisor is ready in
# a fraction of a spawned one's time. The tests where it matters (functions, initializers and
# crashes crossing to a fresh interpreter) run under both, and a few headline tests under the
# default (spawn, under pytest: its faulthandler watchdog thread makes the owner threaded).
FAST = "fork"


def wait_until(condition: Callable[[], object], what: str, timeout: float = GET) -> None:
    """Poll ``condition`` until it is true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def process_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (never existed, exited, or is a zombie)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def warm_up(executor: Any, workers: int) -> list[int]:
    """Wait until ``workers`` workers are up and each has run a task; returns their pids."""
    wait_until(lambda: len(executor.worker_pids()) >= workers, f"{workers} workers to start")
    for f in [executor.submit(square, i) for i in range(2 * workers)]:
        f.result(timeout=GET)
    pids: list[int] = executor.worker_pids()
    return pids


@contextlib.contextmanager
def released(path: Path) -> Iterator[Path]:
    """Create ``path`` on the way out, ending the ``wait_for(path)`` blockers: enter it after
    the executor (``with RobustExecutor() as ex, released(p):``) so it runs before shutdown."""
    try:
        yield path
    finally:
        path.touch()
