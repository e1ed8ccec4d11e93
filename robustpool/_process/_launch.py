"""Starting a pool's supervisor, from the owner: forked, or as a fresh interpreter.

A supervisor is forked from the owner when the owner has a single thread (fast: it inherits
the loaded modules) and otherwise started as a fresh interpreter (safe whenever the owner
already runs threads), which gets the owner's ``sys.path``, working directory and
``multiprocessing`` authkey, like the standard library's spawn. Either way the owner keeps
one end of a control socket; the supervisor's side is in ``_supervisor``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from ._control import Channel, Prepare
from ._oscalls import faulthandler_to_stderr, flush_std_streams, max_fd
from ._supervisor import preload, serve


@dataclass
class SupervisorProcess:
    """The owner's handle on its supervisor."""

    pid: int
    channel: Channel
    method: str
    popen: subprocess.Popen[bytes] | None = None

    exitcode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the supervisor has exited and been reaped, else None."""
        if self.exitcode is not None:
            return self.exitcode
        if self.popen is not None:
            self.exitcode = self.popen.poll()
            return self.exitcode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return None  # not ours to reap (or reaped elsewhere): status unknown
        if pid:
            self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.002)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def owner_is_single_threaded() -> bool:
    """True when forking the owner is safe: no other thread, Python's or native."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        import threading

        return threading.active_count() == 1


def start(method: str) -> SupervisorProcess:
    if method == "fork":
        preload()
    owner_end, sup_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = _start_forked(owner_end, sup_end) if method == "fork" else _start_fresh(owner_end, sup_end)
    except BaseException:
        owner_end.close()
        raise
    finally:
        sup_end.close()
    return proc


def _start_forked(owner_end: socket.socket, sup_end: socket.socket) -> SupervisorProcess:
    fd = sup_end.fileno()
    flush_std_streams()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked supervisor
        code = 70
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides what Ctrl-C means
            # Objects inherited from the owner must never be finalized here: a stale socket
            # object closing "its" fd number would close one of ours.
            gc.freeze()
            os.closerange(3, fd)
            os.closerange(fd + 1, max_fd())
            faulthandler_to_stderr()
            code = serve(fd)
        finally:
            os._exit(code)
    return SupervisorProcess(pid, Channel(owner_end), "fork")


# A fresh supervisor runs with -P: nothing from the working directory (or a script's
# directory) is importable while it boots, so a planted json.py cannot run in it. Its own
# imports resolve against the interpreter's default path, with robustpool's own location
# appended last (for a package that is importable only through the owner's path); the
# owner's sys.path is installed only once the supervisor has imported what it needs.
_BOOT = (
    "import sys; sys.path.append(sys.argv[2]); "
    "from robustpool._process._supervisor import main; sys.exit(main(int(sys.argv[1]), sys.argv[3]))"
)


def _start_fresh(owner_end: socket.socket, sup_end: socket.socket) -> SupervisorProcess:
    fd = sup_end.fileno()
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    args = [sys.executable, *flags, "-P", "-c", _BOOT, str(fd), home, json.dumps(sys.path)]
    # Its own process group: a Ctrl-C at the terminal reaches the owner, which decides what
    # it means, and not a supervisor that may still be booting.
    popen = subprocess.Popen(args, pass_fds=[fd], cwd=os.getcwd(), stdin=subprocess.DEVNULL, process_group=0)
    proc = SupervisorProcess(popen.pid, Channel(owner_end), "spawn", popen)
    # Manager proxies unpickled in workers authenticate with the process's authkey; a fresh
    # interpreter has a random one (a forked supervisor inherits the owner's).
    import multiprocessing

    proc.channel.send(Prepare(bytes(multiprocessing.current_process().authkey)))
    return proc
