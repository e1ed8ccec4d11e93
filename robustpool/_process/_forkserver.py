"""The forkserver: one clean process per owner that forks the supervisors of its pools.

An owner that already runs threads cannot fork safely (another thread may hold a lock the
child would inherit held), so its supervisors used to be fresh interpreters, each paying
for an interpreter start and robustpool's imports: 100+ ms per pool. Instead, the first
such pool starts one fresh interpreter, the forkserver, which imports what supervisors and
workers need and then waits, single-threaded. Every supervisor after that is a fork of it:
a few milliseconds.

Owner and forkserver talk over a ``SOCK_SEQPACKET`` pair, one pickled message per packet:

    owner --Start(cwd, sys.path, environ) + [control fd, stdout, stderr]--> forkserver
    owner <--Started(pid) | Failed(error)-- forkserver, then Exited(pid, code) when reaped

* A supervisor runs with the owner's state at the time of the request, not the state when
  the forkserver started: the working directory, ``sys.path`` and environment come with
  each request, and so do the owner's current stdout and stderr (pytest's capture, say,
  replaces them per test). The authkey comes as for a fresh supervisor (``Prepare``).
* The forkserver is the supervisors' parent: it reaps them and reports each exit code,
  which the owner reads from the socket when it asks (:meth:`Forkserver.exit_code`).
* It runs with ``-P`` and in its own process group, as a fresh supervisor does, and exits
  when the owner's end of the socket closes (the owner exited or was killed): supervisors
  watch their own control sockets, so none outlives the owner either way.
* A child forked from the owner gets a forkserver of its own: the inherited socket is
  closed in the child (``os.register_at_fork``).

State: ``_current`` (the owner's Forkserver) belongs to this module, under ``_current_lock``;
a Forkserver's socket, its exit codes and its liveness are under its own ``lock``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import os
import pickle
import selectors
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _zygote

if TYPE_CHECKING:
    import subprocess  # imported where a fresh forkserver starts: a forked one needs none of it

_REPLY_TIMEOUT = 30.0  # the first request waits for the forkserver's own start too
_EXIT_GRACE = 1.0  # a forkserver told to go (owner exiting) is killed after this
_MAX_PACKET = 1 << 20  # a request carries the environment: far under this


class Start(NamedTuple):
    """Fork a supervisor on the control socket passed with this message. (The messages are
    named tuples, not dataclasses: they are made at import in the owner's first pool, on
    the way to its first result, and cost about half as much.)"""

    cwd: bytes
    path: list[str]
    environ: dict[bytes, bytes]
    stdout: bool  # whether the owner's fd 1 / fd 2 were passed after the control socket
    stderr: bool


class Started(NamedTuple):
    pid: int


class Failed(NamedTuple):
    error: str


class Exited(NamedTuple):
    pid: int
    code: int


class ForkserverError(OSError):
    """The forkserver could not start a supervisor (it is gone, or did not answer)."""


class ForkserverGone(ForkserverError):
    """The request never reached the forkserver: it died since it was last used (the OOM
    killer, say). Nothing was started, so the request may go to a new one."""


# -- the owner's side -------------------------------------------------------------------


class _Forked:
    """A forkserver forked from the owner (the zygote, see ``robustpool._zygote``): the few
    ``Popen`` methods ``Forkserver`` uses, on a child of ours."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # reaped elsewhere: status unknown
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        """The exit code once reaped, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class Forkserver:
    """The owner's handle on its forkserver process: a fresh interpreter, or the zygote
    forked at import (``forked``: its socket's fd and pid)."""

    def __init__(self, forked: tuple[int, int] | None = None) -> None:
        self.lock = threading.Lock()
        self.popen: subprocess.Popen[bytes] | _Forked
        if forked is not None:
            ours = socket.socket(fileno=forked[0])
            self.popen = _Forked(forked[1])
        else:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self.popen = _spawn(theirs.fileno())
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self.alive = True
        self.exits: dict[int, int] = {}  # supervisors reaped, not yet asked about

    def start_supervisor(self, control_fd: int) -> int:
        """Fork a supervisor serving ``control_fd``; its pid. Raises ForkserverError."""
        std = [fd for fd in (1, 2) if _is_open(fd)]
        request = Start(os.getcwdb(), list(sys.path), dict(os.environb), 1 in std, 2 in std)
        with self.lock:
            if not self.alive:
                raise ForkserverError("the forkserver is gone")
            try:
                socket.send_fds(self.sock, [pickle.dumps(request)], [control_fd, *std])
            except OSError as exc:
                self._lost()
                raise ForkserverGone(f"the forkserver is gone: {exc!r}") from exc
            try:
                deadline = time.monotonic() + _REPLY_TIMEOUT
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"no answer from the forkserver in {_REPLY_TIMEOUT:.0f} s")
                    reply = self._receive(left)
                    if isinstance(reply, Started):
                        return reply.pid
                    if isinstance(reply, Failed):
                        raise ForkserverError(f"the forkserver could not fork a supervisor: {reply.error}")
            except ForkserverError:
                raise
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self._lost()
                raise ForkserverError(f"the forkserver did not answer: {exc!r}") from exc

    def exit_code(self, pid: int) -> int | None:
        """The exit code of supervisor ``pid`` once the forkserver reaped it, else None."""
        with self.lock:
            if self.alive:
                with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError):
                    while self._receive(0.0) is not None:
                        pass
            return self.exits.pop(pid, None)

    def _receive(self, timeout: float) -> Started | Failed | Exited | None:
        """One message (exits are recorded as they pass); None if none came in ``timeout``."""
        self.sock.settimeout(max(0.0, timeout))
        try:
            data = self.sock.recv(_MAX_PACKET)
        except (BlockingIOError, TimeoutError):
            if timeout > 0:
                raise TimeoutError("no answer from the forkserver") from None
            return None
        if not data:
            self._lost()
            raise EOFError("the forkserver exited")
        msg = pickle.loads(data)
        if isinstance(msg, Exited):
            self.exits[msg.pid] = msg.code
        return msg  # type: ignore[no-any-return]

    def _lost(self) -> None:
        """The forkserver is gone or unusable: stop using it (a new one starts on demand)."""
        self._close(grace=0.0)

    def stop(self) -> None:
        """Let the forkserver go (it exits at the end of its socket) and reap it, bounded."""
        with self.lock:
            self._close(grace=_EXIT_GRACE)

    def _close(self, grace: float) -> None:
        """Close our end, give the forkserver ``grace`` seconds to exit, then kill and reap
        it (bounded). Called with ``lock`` held."""
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.close()
        self._wait(grace)
        if self.popen.returncode is None:
            with contextlib.suppress(OSError):
                self.popen.kill()
            self._wait(_EXIT_GRACE)

    def _wait(self, timeout: float) -> None:
        if isinstance(self.popen, _Forked):
            self.popen.wait(timeout)
            return
        import subprocess  # loaded already: this forkserver is a Popen

        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


_current: Forkserver | None = None
_current_lock = threading.Lock()


def owner_is_single_threaded() -> bool:
    """True when forking the owner is safe: no other thread, Python's or native."""
    return _zygote.single_threaded()


def choose(start_method: str | None) -> str:
    """The start method a pool's supervisor gets: the one asked for, else fork when this
    process has a single thread, else forkserver (spawn where there is no fork)."""
    if start_method is not None:
        return start_method
    if not hasattr(os, "fork"):
        return "spawn"
    return "fork" if owner_is_single_threaded() else "forkserver"


def prestart(start_method: str | None) -> None:
    """Start the forkserver now if a pool about to be built will need it, so that it boots
    while the owner imports the process engine (they overlap on two cores)."""
    if choose(start_method) == "forkserver":
        with contextlib.suppress(OSError):  # the pool's own start will say what is wrong
            current()


def start_supervisor(control_fd: int) -> tuple[Forkserver, int]:
    """Have this process's forkserver fork a supervisor serving ``control_fd``: (the
    forkserver, the supervisor's pid). A forkserver found dead is replaced once; a request
    it may have received is never sent twice (two supervisors would serve one socket)."""
    server = current()
    try:
        return server, server.start_supervisor(control_fd)
    except ForkserverGone:
        server = current()
        return server, server.start_supervisor(control_fd)


def current() -> Forkserver:
    """This process's forkserver, started on first use (and again after it died)."""
    global _current
    with _current_lock:
        server = _running()
        if server is None:
            if _current is None:
                atexit.register(_stop_current)
            server = _current = Forkserver(_zygote.take())
        return server


def _running() -> Forkserver | None:
    """This process's forkserver if it is usable: alive, and started by this very process
    (``owner`` also covers a fork that bypassed ``os.register_at_fork``)."""
    server = _current
    if server is None or not server.alive or server.owner != os.getpid():
        return None
    return server


def server_pid() -> int | None:
    """The pid of this process's forkserver, if one runs (leak checks leave it out: it lives
    as long as its owner, by design)."""
    server = _running()
    return _zygote.pid() if server is None else server.popen.pid


def server_fds() -> set[int]:
    """The descriptors this process holds for its forkserver (fd-growth checks leave them
    out, as leak checks leave out its process)."""
    server = _running()
    fd = _zygote.fd() if server is None else server.sock.fileno()
    return {fd} if fd is not None and fd >= 0 else set()


def exit_code_of(server: Forkserver, pid: int) -> int | None:
    """The exit code of supervisor ``pid`` of ``server``, once known; None while it runs.

    If that forkserver is gone, nobody reaped the supervisor for us (init did): a
    supervisor no longer there is reported with -1, "exited, status unknown"."""
    code = server.exit_code(pid)
    if code is None and not server.alive and not _exists(pid):
        return -1
    return code


def _stop_current() -> None:
    with _current_lock:
        server = _current
    if server is not None and server.owner == os.getpid():
        server.stop()


def _after_fork_in_child() -> None:
    """A forked child must not share its parent's forkserver: close our copy of the socket
    (the parent's forkserver sees no end of file while the parent holds its own)."""
    global _current, _current_lock
    _current_lock = threading.Lock()
    server, _current = _current, None
    if server is not None:
        with contextlib.suppress(OSError):
            server.sock.close()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# As a fresh supervisor does (see _launch), the forkserver runs with -P: nothing from the
# working directory is importable while it imports robustpool, whose own location is
# appended last. It never imports from the owner's sys.path; supervisors install that.
_BOOT = (
    "import sys; sys.path.append(sys.argv[2]); from robustpool._process._forkserver import main; sys.exit(main(int(sys.argv[1])))"
)


def _spawn(fd: int) -> subprocess.Popen[bytes]:
    import subprocess

    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    args = [sys.executable, *flags, "-P", "-c", _BOOT, str(fd), home]
    # Its own process group, like a fresh supervisor: Ctrl-C reaches the owner only. Its
    # working directory is "/", so it keeps no directory of the owner's busy.
    return subprocess.Popen(args, pass_fds=[fd], cwd="/", stdin=subprocess.DEVNULL, process_group=0)


# -- the forkserver's side -------------------------------------------------------------


def serve_forked_server(fd: int) -> int:  # pragma: no cover - runs in the zygote
    """The zygote, just forked from the owner: become what ``_spawn`` starts, then serve.

    Objects inherited from the owner are frozen, never finalized here (a socket object
    closing "its" fd number would close one of ours). Every descriptor but the standard
    ones and the socket is closed, stdin reads nothing, and the working directory is "/",
    as for a fresh forkserver. While it imports the engine, ``sys.path`` is the owner's but
    for the entry ``-P`` would have left out (the script's directory, or the working
    directory for ``-c`` and the REPL): nothing planted there runs in it. Signal handlers the
    owner installed in Python are reset, and the process leaves the owner's group.
    """
    gc.freeze()
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    from ._oscalls import max_fd

    os.closerange(3, fd)
    os.closerange(fd + 1, max_fd())
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    os.chdir("/")
    for signum in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
    if not sys.flags.safe_path and sys.path:
        del sys.path[0]
    _forget_partial_modules()
    return main(fd)


def _forget_partial_modules() -> None:  # pragma: no cover - runs in the zygote
    """Drop the modules that were still being imported when the zygote was forked: the one
    whose import imported robustpool (a test module, an application's), and the ones that
    imported it. In the zygote they stay half-run forever, so a worker unpickling a function
    of theirs by reference would find it missing; dropped, a worker imports them afresh, as a
    fresh forkserver's would. (importlib marks a module's spec ``_initializing`` while the
    module runs; the mark is private but has been there since Python 3.4.)"""
    for name, module in list(sys.modules.items()):
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            del sys.modules[name]


def main(fd: int) -> int:  # pragma: no cover - runs in the forkserver process
    """Entry point of the forkserver: preload, then fork supervisors on request."""
    import multiprocessing.process  # noqa: F401  (each supervisor sets the owner's authkey there)

    _zygote.never()

    from ._supervisor import preload

    preload()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _on_sigchld)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    gc.freeze()  # what is loaded now is shared by every fork: keep it off the collector's pages
    while True:
        for key, _ in selector.select():
            if key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
            else:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_PACKET, 3)
                except OSError:
                    return 0
                if not data:
                    return 0  # the owner is gone
                reply = _fork_supervisor(pickle.loads(data), fds)
                for passed in fds:
                    os.close(passed)
                with contextlib.suppress(OSError):
                    sock.send(pickle.dumps(reply))
        for pid, code in _reap():
            with contextlib.suppress(OSError):
                sock.send(pickle.dumps(Exited(pid, code)))


def _on_sigchld(signum: int, frame: Any) -> None:  # pragma: no cover - in the forkserver
    """A handler (not SIG_IGN), so supervisors stay reapable; the wakeup fd wakes the loop."""


def _reap() -> list[tuple[int, int]]:  # pragma: no cover - in the forkserver
    out: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if not pid:
            return out
        out.append((pid, os.waitstatus_to_exitcode(status)))


def _fork_supervisor(request: Start, fds: list[int]) -> Started | Failed:  # pragma: no cover
    if not fds:
        return Failed("no control socket came with the request")
    control, rest = fds[0], fds[1:]
    stdout = rest.pop(0) if request.stdout and rest else None
    stderr = rest.pop(0) if request.stderr and rest else None
    try:
        pid = os.fork()
    except OSError as exc:
        return Failed(f"fork: {exc}")
    if pid:
        return Started(pid)
    code = 70
    try:  # in the new supervisor
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control = fcntl.fcntl(control, fcntl.F_DUPFD, 3)  # clear of fds 0-2, which come next
        _become(request, stdout, stderr)
        from ._supervisor import serve_forked

        # Nothing of the forkserver's (its socket, its wakeup pipe) or of the request stays.
        code = serve_forked(control)
    finally:
        os._exit(code)


def _become(request: Start, stdout: int | None, stderr: int | None) -> None:  # pragma: no cover
    """Take on the owner's state as of its request (see the module docstring)."""
    for passed, std in ((stdout, 1), (stderr, 2)):
        if passed is not None:
            os.dup2(passed, std)
        else:
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, std)
                os.close(devnull)
    with contextlib.suppress(OSError):
        os.chdir(request.cwd)  # as a fork of the owner would be (a deleted one stays "/")
    os.environ.clear()
    for name, value in request.environ.items():
        os.environb[name] = value
    sys.path[:] = request.path
