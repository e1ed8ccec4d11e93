"""Supervisors of finished pools that are still on their way out, reaped without a wait.

A pool closed politely is finished, for its caller, once every worker has said that it sent
its last byte (each closes its socket after its last result and its stdout, before its
process ends: see ``_worker.serve``). What is left then is the kernel's teardown of the
processes, which grows with what they share of the owner's memory (about 20 ms for a 500 MB
owner here, per layer of processes), and nobody needs to wait for it. So the pool hands
its supervisor here and returns; the supervisor reaps its own workers (it is their parent,
with its bounded escalation to SIGKILL) and exits, and this module reaps it:

* at the next supervisor start in this process (``_launch.start``), without waiting;
* at interpreter exit, waiting a bounded time, then killing what is left (``_EXIT_WAIT``).

Until then a finished supervisor is at most a zombie: no memory, one process table entry.

State: ``_exiting`` belongs to this module, under ``_lock``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._launch import SupervisorProcess

_EXIT_WAIT = 5.0  # at interpreter exit: how long the exiting supervisors get, together

_exiting: list[SupervisorProcess] = []
_lock = threading.Lock()
_registered = False


def adopt(proc: SupervisorProcess) -> None:
    """Reap ``proc`` later: its pool is finished and has closed its control socket."""
    global _registered
    with _lock:
        _exiting.append(proc)
        if not _registered:
            # Registered at the first use, so it runs before the forkserver's own exit hook
            # when the forkserver is older (atexit runs last-in first): the forkserver then
            # still reports the exit codes of the supervisors it forked.
            _registered = True
            atexit.register(reap_all, _EXIT_WAIT)


def reap_exited() -> None:
    """Reap, without waiting, every adopted supervisor that has exited."""
    with _lock:
        _exiting[:] = [p for p in _exiting if p.poll() is None]


def reap_all(timeout: float) -> None:
    """Wait up to ``timeout`` for every adopted supervisor to exit, then kill and reap the rest
    (bounded: a second at most)."""
    deadline = time.monotonic() + timeout
    reap_exited()
    while pending() and time.monotonic() < deadline:
        time.sleep(0.005)
        reap_exited()
    with _lock:
        left = list(_exiting)
    for proc in left:
        proc.kill()
    for proc in left:
        proc.wait(1.0 / max(1, len(left)))
    reap_exited()


def pending() -> int:
    """How many adopted supervisors have not been reaped yet."""
    with _lock:
        return len(_exiting)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _exiting.clear()  # the parent's to reap, not ours


os.register_at_fork(after_in_child=_after_fork_in_child)
