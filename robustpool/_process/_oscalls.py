"""What the supervisor and its workers ask of the operating system, each call best effort.

Linux-only safety nets (parent-death signal, child subreaper), glibc tuning, and the
hygiene of a process about to fork or just forked. Without any one of them a pool loses a
safety net or a speed-up, never a function.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from typing import Any


def flush_std_streams() -> None:
    """Flush stdout and stderr before a fork, as the standard library does: text the
    parent printed but had not flushed would otherwise be printed again by every child
    that flushes its inherited copy of the buffer (a worker does, on its way out)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def faulthandler_to_stderr() -> None:
    """Point faulthandler at fd 2 and enable it.

    The owner may have enabled it on a descriptor we just closed (pytest does): its
    number would be reused by one of ours, and a crash report would be written into a
    worker's socket or progress slot. On stderr, a native crash in a task prints the
    worker's Python stack, which is the most useful thing it can leave behind.
    """
    import faulthandler

    with contextlib.suppress(Exception):
        faulthandler.enable(file=2)


def max_fd() -> int:
    try:
        return max(256, min(os.sysconf("SC_OPEN_MAX"), 1 << 20))
    except (ValueError, OSError):
        return 4096


@functools.cache
def libc() -> Any:
    """The C library's handle, loaded once (None off Linux or where it cannot be loaded)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _libc_call(name: str, *args: int) -> None:
    """Call a C library function, best effort: without it we lose a safety net or a
    speed-up, never a function."""
    lib = libc()
    if lib is not None:
        with contextlib.suppress(AttributeError):
            getattr(lib, name)(*args)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_malloc() -> None:
    """Let a worker keep a little freed heap instead of returning it at every task (glibc).

    With glibc's defaults, a task that receives and returns 1 MiB grows the heap by 2 MiB and
    trims it again, so every such task page-faults 2 MiB of fresh, kernel-zeroed memory.
    Blocks under 4 MiB now come from the heap, which keeps up to 16 MiB free before it is
    trimmed; larger ones are mapped and unmapped as before. Only workers are tuned: the
    owner is the user's process.
    """
    _libc_call("mallopt", _M_MMAP_THRESHOLD, 4 << 20)
    _libc_call("mallopt", _M_TRIM_THRESHOLD, 16 << 20)


def pdeathsig() -> None:
    """Ask Linux to SIGKILL this process when its parent (the supervisor) dies."""
    _libc_call("prctl", 1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def after_fork_in_worker() -> None:
    """What ``multiprocessing`` does in a child it forks, done for our workers: run the
    hooks registered with ``multiprocessing.util.register_after_fork`` (a manager proxy
    must open its own connection, not share its parent's) and drop the parent's finalizers.
    Only when the module is loaded: otherwise nothing can have registered a hook."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    with contextlib.suppress(Exception):
        util._finalizer_registry.clear()
        util._run_after_forkers()


def subreaper() -> None:
    """Become a child subreaper (Linux): subprocesses orphaned by a task come to us, so
    they can be killed instead of escaping to init."""
    _libc_call("prctl", 36, 1)  # PR_SET_CHILD_SUBREAPER
