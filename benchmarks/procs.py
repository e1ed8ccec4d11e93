"""Process hygiene for the harness: quiet threads, leftover processes, and bounded child runs.

* ``settle_threads`` waits (bounded) until the owner has no more threads than at the start,
  before any pool is built: robustpool forks its supervisor only from a single-threaded
  owner, so a thread left behind by the previous pool would change what is measured.
* ``reap_children`` waits (bounded) for processes a pool left behind, kills them and says so.
* ``run_child`` runs ``python -m benchmarks.child`` in its own session with a timeout; on
  timeout it kills the whole tree, and afterwards it kills whatever is left in that session.
  ``run_python`` does the same for a ``python -c`` script (the import case: nothing of the
  harness may be imported before what it times).
* ``started_since`` says which processes a pool started, and which of them are fresh
  interpreters rather than forks (how a peer starts its processes, in a threaded owner).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# Helper processes some peers keep for the life of the owner (loky and multiprocessing
# resource trackers, robustpool's forkserver, which an owner running threads forks its
# supervisors from); they are not leaks, and killing one would break the owner's next pool.
_LONG_LIVED = ("resource_tracker", "robustpool._process._forkserver")


def thread_count() -> int:
    """Threads of this process, native ones included (what robustpool itself checks)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def settle_threads(baseline: int, timeout: float = 0.5) -> int:
    """Wait up to ``timeout`` s for the thread count to fall to ``baseline``; return the count."""
    deadline = time.monotonic() + timeout
    count = thread_count()
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.002)
        count = thread_count()
    return count


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:100]}"
    except psutil.Error:
        return str(proc.pid)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _long_lived(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(marker in cmdline for marker in _LONG_LIVED)


def children() -> set[int]:
    """Pids of this process's live descendants."""
    try:
        return {p.pid for p in psutil.Process().children(recursive=True) if _alive(p)}
    except psutil.Error:
        return set()


def _kill_all(procs: list[psutil.Process], timeout: float) -> None:
    """SIGKILL ``procs`` and wait up to ``timeout`` s until each is gone or a zombie."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)


def reap_children(before: set[int], timeout: float = 2.0) -> list[str]:
    """Wait up to ``timeout`` s for descendants not in ``before`` to exit; kill and describe the rest."""
    left = _outliving(before, timeout)
    described = [_describe(p) for p in left]
    _kill_all(left, timeout)
    return described


def _cmdline(proc: psutil.Process) -> list[str] | None:
    try:
        return proc.cmdline()
    except psutil.Error:
        return None


def _short(cmdline: list[str]) -> str:
    """A command line without the interpreter's path, cut to 120 characters."""
    words = [os.path.basename(cmdline[0]), *cmdline[1:]] if cmdline else []
    text = " ".join(words)
    return text if len(text) <= 120 else text[:119] + "…"


def started_since(before: set[int]) -> tuple[int, list[str]]:
    """How many live descendants are not in ``before``, and the (short) command lines of
    those among them that are fresh interpreters.

    A process whose command line is its parent's is taken for a fork of it (fork does not
    change the command line); any other was exec'd: a fresh interpreter, which pays for its
    start and its imports. A pool's supervisor forked from a fresh forkserver is a fork.
    """
    try:
        new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and _alive(p)]
    except psutil.Error:
        return 0, []
    fresh = []
    for proc in new:
        try:
            parent = proc.parent()
        except psutil.Error:
            parent = None
        own = _cmdline(proc)
        if own is not None and parent is not None and own != _cmdline(parent):
            fresh.append(_short(own))
    return len(new), fresh


def wait_children(before: set[int], timeout: float = 2.0) -> list[str]:
    """Wait up to ``timeout`` s for descendants not in ``before`` to exit; describe the rest
    (left running: a helper a peer keeps for the owner's life, such as a forkserver)."""
    return [_describe(p) for p in _outliving(before, timeout)]


def _outliving(before: set[int], timeout: float) -> list[psutil.Process]:
    """Descendants not in ``before`` (and not long-lived helpers) still alive after waiting
    up to ``timeout`` s for them to exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and _alive(p)]
        except psutil.Error:
            new = []
        new = [p for p in new if not _long_lived(p)]
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.01)


def _session_members(sid: int) -> list[psutil.Process]:
    members = []
    for pid in psutil.pids():
        try:
            if pid != sid and os.getsid(pid) == sid:
                members.append(psutil.Process(pid))
        except (OSError, psutil.Error):
            continue
    return [p for p in members if _alive(p)]


@dataclass
class ChildRun:
    """What a ``python -m benchmarks.child`` run printed, and how it ended."""

    result: dict[str, Any] | None  # the RESULT line, parsed
    stages: list[str]  # the STAGE lines, in order
    timed_out: bool
    returncode: int | None
    stderr: str
    leaked: list[str] = field(default_factory=list)


def run_child(request: dict[str, Any], timeout: float) -> ChildRun:
    """Run one isolated measurement; kill its whole process tree if it overruns ``timeout``."""
    return _run_python(["-m", "benchmarks.child", json.dumps(request)], timeout)


def run_python(code: str, timeout: float, environ: dict[str, str | None] | None = None) -> ChildRun:
    """Run ``python -c code`` as ``run_child`` runs a measurement (its RESULT and STAGE lines),
    with ``environ`` applied to the environment (None: the variable removed)."""
    return _run_python(["-c", code], timeout, environ or {})


def _run_python(args: list[str], timeout: float, environ: dict[str, str | None] | None = None) -> ChildRun:
    env = dict(os.environ)
    for name, value in (environ or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    # The child's temporary files go in a directory of ours, removed whatever became of the
    # child: one killed at its timeout (a peer that hangs at a death) cannot clean up itself.
    scratch = tempfile.mkdtemp(prefix="robustpool-bench-")
    env["TMPDIR"] = scratch
    try:
        return _run_in(args, timeout, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_in(args: list[str], timeout: float, env: dict[str, str]) -> ChildRun:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=PACKAGE_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(proc)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kill above is SIGKILL
            proc.kill()
            out, err = proc.communicate()
    # Anything still in the child's session outlived it: wait briefly, then kill it.
    deadline = time.monotonic() + 3.0
    left = _session_members(proc.pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = _session_members(proc.pid)
    leaked = [_describe(p) for p in left if not _long_lived(p)]
    _kill_all(left, 5.0)
    result = None
    stages = []
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
        elif line.startswith("STAGE "):
            stages.append(line[len("STAGE ") :])
    return ChildRun(result, stages, timed_out, proc.returncode, err[-2000:], leaked)


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    _kill_all([*tree, *_session_members(proc.pid)], 5.0)
