"""The zygote: this process's forkserver, forked at import while the process has one thread.

A pool built in an owner that runs threads cannot fork its supervisor from the owner, so a
forkserver forks it (``_process._forkserver``). Started on demand, that forkserver is a fresh
interpreter which must boot and import robustpool's process engine first: about 60-130 ms,
on the way to the first pool's first result. But an owner usually imports robustpool before
anything in it starts a thread (a logging handler, an HTTP client, tqdm's monitor). At that
moment a fork is safe and costs about a millisecond, so ``from robustpool import RobustPool``
forks the forkserver right then, and it imports the engine in the background, on its own.
The first threaded pool then finds it ready.

The fork is the forkserver's only difference: the same loop serves the same requests
(``_forkserver.serve_forked_server``), each supervisor still takes the owner's state as of
its own pool (working directory, ``sys.path``, environment, stdout, stderr), and the
forkserver still exits at the end of its socket, so it never outlives the owner.

* Not forked when the process already runs a thread, has no ``fork``, or when the
  environment says ``ROBUSTPOOL_ZYGOTE=0``: the forkserver is then started on demand, as before.
  Nor in robustpool's own processes (``never``): a worker whose task's module imports
  robustpool forks none.
* This module imports nothing but ``os``, ``contextlib`` and ``_socket`` (and ``_oscalls``
  when it forks): the rest of the import stays lazy; the owner wraps the socket once its
  first pool needs it.
* A child forked from the owner never uses its parent's zygote: its copy of the socket is
  closed at fork (``os.register_at_fork``), as for any forkserver.

State: ``_pending`` (the zygote not yet taken by ``_forkserver``) belongs to this module; it
is written at import and taken once, under the forkserver module's lock.
"""

from __future__ import annotations

import _socket
import contextlib
import os

#: (our end of the socket, the zygote's pid, the pid of the process that forked it)
_pending: tuple[int, int, int] | None = None
_never = False  # in robustpool's own processes (see never())


def never() -> None:
    """Fork no zygote in this process, nor in the processes it forks: called by robustpool's
    own forkservers and supervisors, so that a worker importing a module that imports
    robustpool (a task's own module, say) forks none."""
    global _never
    _never = True


def fork_at_import() -> None:
    """Fork the zygote now if this process has a single thread (see the module docstring)."""
    global _pending
    if _never or _pending is not None or os.environ.get("ROBUSTPOOL_ZYGOTE", "1") == "0" or not hasattr(os, "fork"):
        return
    if not single_threaded():
        return
    from ._process._oscalls import flush_std_streams  # signal and functools, its imports, are loaded by now

    flush_std_streams()
    try:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    except OSError:
        return  # out of descriptors, say: the forkserver starts on demand instead
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return
    if pid == 0:  # pragma: no cover - runs in the zygote
        code = 70
        try:
            ours.close()
            from ._process._forkserver import serve_forked_server

            code = serve_forked_server(theirs.detach())
        finally:
            os._exit(code)
    theirs.close()
    _pending = (ours.detach(), pid, os.getpid())


def _mine() -> tuple[int, int] | None:
    """(our socket's fd, the zygote's pid) while no forkserver has taken it, if this very
    process forked it (``_after_fork_in_child`` clears a parent's first; the pid covers a
    fork that bypassed it)."""
    pending = _pending
    return None if pending is None or pending[2] != os.getpid() else pending[:2]


def take() -> tuple[int, int] | None:
    """(our socket's fd, the zygote's pid), once, if this very process forked one."""
    global _pending
    mine, _pending = _mine(), None
    return mine


def pid() -> int | None:
    """The zygote's pid while no forkserver has taken it (leak checks leave it out)."""
    mine = _mine()
    return None if mine is None else mine[1]


def fd() -> int | None:
    """Our end of the zygote's socket while no forkserver has taken it (fd-growth checks
    leave it out, as they leave out a forkserver's)."""
    mine = _mine()
    return None if mine is None else mine[0]


def single_threaded() -> bool:
    """True when this process has no other thread, Python's or native (a fork is safe)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        import threading

        return threading.active_count() == 1


def _after_fork_in_child() -> None:
    global _pending
    pending, _pending = _pending, None
    if pending is not None:
        with contextlib.suppress(OSError):
            os.close(pending[0])


os.register_at_fork(after_in_child=_after_fork_in_child)
