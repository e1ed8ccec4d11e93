"""Starting a pool's supervisor, from the owner: forked, by the forkserver, or fresh.

A supervisor is forked from the owner when the owner has a single thread (fast: it inherits
the loaded modules). When the owner already runs threads it is forked by the owner's
forkserver (``_forkserver``: one clean process per owner, started on first need), and on
request (``start_method="spawn"``) it is a fresh interpreter. Either of the last two gets
the owner's ``sys.path``, working directory and ``multiprocessing`` authkey, like the
standard library's spawn. Either way the owner keeps
one end of a control socket; the supervisor's side is in ``_supervisor``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _forkserver, _reaper
from ._control import Channel, Prepare
from ._oscalls import flush_std_streams

if TYPE_CHECKING:
    import subprocess  # imported by _start_fresh only: forks need none of it


@dataclass
class SupervisorProcess:
    """The owner's handle on its supervisor."""

    pid: int
    channel: Channel
    method: str
    popen: subprocess.Popen[bytes] | None = None

    forkserver: _forkserver.Forkserver | None = None  # its parent, when it was forked by one

    exitcode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the supervisor has exited and been reaped, else None."""
        if self.exitcode is not None:
            return self.exitcode
        if self.forkserver is not None:
            self.exitcode = _forkserver.exit_code_of(self.forkserver, self.pid)
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


def start(method: str) -> SupervisorProcess:
    """Start a supervisor: ``fork`` (of this process), ``forkserver`` (a fork of this
    process's forkserver, see ``_forkserver``) or ``spawn`` (a fresh interpreter)."""
    _reaper.reap_exited()  # the supervisors of pools finished since the last start
    if method == "fork":
        # Imported here: an owner whose supervisors are forks of the forkserver (a threaded
        # owner) never runs the supervisor's code itself, and its first pool is the sooner.
        from ._supervisor import preload

        preload()
    owner_end, sup_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    starts = {"fork": _start_forked, "forkserver": _start_by_forkserver, "spawn": _start_fresh}
    try:
        proc = starts[method](owner_end, sup_end)
    except BaseException:
        owner_end.close()
        raise
    finally:
        sup_end.close()
    return proc


def _start_forked(owner_end: socket.socket, sup_end: socket.socket) -> SupervisorProcess:
    from ._supervisor import serve_forked  # loaded by preload() already

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
            code = serve_forked(fd)
        finally:
            os._exit(code)
    return SupervisorProcess(pid, Channel(owner_end), "fork")


def _start_by_forkserver(owner_end: socket.socket, sup_end: socket.socket) -> SupervisorProcess:
    server, pid = _forkserver.start_supervisor(sup_end.fileno())
    proc = SupervisorProcess(pid, Channel(owner_end), "forkserver", forkserver=server)
    _send_authkey(proc)
    return proc


def _send_authkey(proc: SupervisorProcess) -> None:
    # Manager proxies unpickled in workers authenticate with the process's authkey; a
    # supervisor that is not a fork of the owner has another one.
    import multiprocessing

    proc.channel.send(Prepare(bytes(multiprocessing.current_process().authkey)))


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
    import json
    import subprocess

    fd = sup_end.fileno()
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    args = [sys.executable, *flags, "-P", "-c", _BOOT, str(fd), home, json.dumps(sys.path)]
    # Its own process group: a Ctrl-C at the terminal reaches the owner, which decides what
    # it means, and not a supervisor that may still be booting.
    popen = subprocess.Popen(args, pass_fds=[fd], cwd=os.getcwd(), stdin=subprocess.DEVNULL, process_group=0)
    proc = SupervisorProcess(popen.pid, Channel(owner_end), "spawn", popen)
    _send_authkey(proc)
    return proc
