"""What the hardening tests share: everything a worker runs, and the owner's bounded waits.

Workers receive the task functions by reference (``hardening._support._big_bytes``), so this
module must stay importable by that name in a fresh interpreter: a spawned supervisor gets
the owner's ``sys.path``, on which pytest puts ``tests/`` for the ``hardening`` package, and
the owner script of ``test_escapes`` puts ``tests/`` there itself. Everything a worker runs
is defined here, at module level, and nothing a worker needs is defined in a test module.
The owner's side follows: ``_outcome`` and the checks that make it fail as soon as a task
has run more often, or more workers have been replaced, than the behaviour allows, and the
helpers that write an owner script to ``tmp_path`` and run it with ``PYTHONPATH`` pointing
at this checkout.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from robustpool import RobustPool

REPO = Path(__file__).resolve().parents[2]
START_METHODS = ["fork", "forkserver", "spawn"]
MiB = 2**20
RESULT_WORKER = "pickling the result in the worker"
TASK_OWNER = "pickling the task in the owner"


# --- what runs in the workers (module level, so spawn-mode workers can import it) ---------


def _square(x: int) -> int:
    return x * x


def _record_run(runs: str) -> None:
    """Append one line to ``runs``: the test counts the lines to count the runs."""
    with open(runs, "a") as f:
        f.write(f"{os.getpid()}\n")


def _close_fds_then_return(runs: str) -> str:
    _record_run(runs)
    os.closerange(3, 65536)  # the data socket too: the reply can no longer be sent
    return "closed my descriptors"


def _devnull_over_fds_then_return(runs: str) -> str:
    _record_run(runs)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in range(3, 101):
        if fd != null:
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    return "replaced my descriptors"


def _shrink_frames() -> None:
    """Initializer: lower the frame limit in the worker, so 2 MiB stands for 4 GiB."""
    import robustpool._process._wire as w

    w.MAX_FRAME = 1 << 20


def _big_bytes(runs: str, size: int) -> bytes:
    _record_run(runs)
    return b"z" * size


def _big_after_pidfile(runs: str, pidfile: str, size: int) -> bytes:
    """Build a big result, then say who we are: from then on only its trip is left."""
    _record_run(runs)
    value = b"y" * size
    Path(pidfile).write_text(str(os.getpid()))
    return value


def _scribble(what: str, then: str) -> str:
    """Write bytes that are not frames into every descriptor we have (the data socket)."""
    data = b"garbage" * 100 if what == "garbage" else struct.pack("<IB", 2**32 - 2, 13)
    for fd in range(3, 101):
        with contextlib.suppress(OSError):
            os.write(fd, data)
    if then == "sleep":
        time.sleep(30)
    return "scribbled"


_KEEP: list[Any] = []  # Popen objects a task keeps, so their __del__ does not warn in the worker


def _start_grandchildren(directory: str) -> int:
    """Start ``sh`` in a session of its own, with two ``sleep 60`` in the background;
    their pids go to a.pid and b.pid. Returns the pid of ``sh``."""
    a, b = os.path.join(directory, "a.pid"), os.path.join(directory, "b.pid")
    script = f"sleep 60 & echo $! > {a}.tmp; mv {a}.tmp {a}; sleep 60 & echo $! > {b}.tmp; mv {b}.tmp {b}; wait"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    _KEEP.append(proc)
    deadline = time.monotonic() + 10
    while not (os.path.exists(a) and os.path.exists(b)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.pid


def _make_file(directory: str, i: int) -> str:
    """Create ``item-i``; every fourth item (3, 7, ...) first sleeps 30 s."""
    if i % 4 == 3:
        time.sleep(30)
    path = os.path.join(directory, f"item-{i}")
    Path(path).write_text(str(i))
    return path


def _recurse(n: int) -> int:
    return _recurse(n + 1) + 1


def _recurse_forever(runs: str, limit: int | None) -> int:
    _record_run(runs)
    if limit is not None:
        sys.setrecursionlimit(limit)
    return _recurse(0)


def _set_pid_on(ns: Any) -> int:
    ns.x = os.getpid()
    return int(ns.x)


def _count_initializer(ns: Any) -> None:
    ns.test += 1


class _ResultRefusesToPickle:
    def __reduce__(self) -> tuple[Any, ...]:
        raise ValueError("this result cannot be pickled")


def _unpicklable_result(x: int) -> _ResultRefusesToPickle:
    return _ResultRefusesToPickle()


def _no_new_threads() -> None:
    """Initializer: from now on this worker cannot start a thread (as under RLIMIT_NPROC,
    which root ignores, so the limit is imitated at the call that hits it)."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    threading.Thread.start = refuse  # type: ignore[method-assign]


def _tiny(x: int) -> int:
    return x + 1


# --- the owner's side: bounded waits that fail fast ----------------------------------------


def _runs(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def _outcome(result: Any, timeout: float, checks: tuple[Callable[[], None], ...] = (), what: str = "the call") -> Any:
    """The value or the exception ``result`` ends with, within ``timeout`` seconds.

    ``checks`` run at every poll and fail the test at once when one raises (a task run once
    too often, a worker respawned once too often): today's respawn loops then fail in a
    moment instead of burning the CPU until the timeout.
    """
    deadline = time.monotonic() + timeout
    while not result.ready():
        for check in checks:
            check()
        if time.monotonic() > deadline:
            pytest.fail(f"hang: {what} did not end within {timeout:.0f} s")
        time.sleep(0.02)
    try:
        return result.get(timeout=0)
    except BaseException as exc:
        return exc


def _at_most_runs(runs: Path, n: int) -> Callable[[], None]:
    def check() -> None:
        got = _runs(runs)
        assert got <= n, f"the task ran {got} times, at most {n} allowed (requeued after its worker died?)"

    return check


def _at_most_replaced(pool: RobustPool, n: int) -> Callable[[], None]:
    def check() -> None:
        stats = pool.stats()
        assert stats.workers_replaced <= n, f"{stats.workers_replaced} workers replaced, at most {n} allowed: {stats.replaced}"

    return check


def _env() -> dict[str, str]:
    """The environment of an owner script: this checkout importable, stdio buffered as usual."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _script(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def _wait_for_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout:.0f} s"
        time.sleep(0.002)
    return path.read_text()
