"""The supervisor process: parent of every worker, reaper, enforcer, and owner-death watch.

One supervisor per pool. It is single-threaded, so it can fork workers safely however many
threads the owner runs. Data flow::

    owner --SpawnWorker(+fds)/KillWorker/Shutdown--> supervisor --fork--> worker
    owner <--WorkerStarted/WorkerExited/Goodbye----- supervisor <-SIGCHLD- worker

* It forks each worker with the data socket and progress slot the owner handed over (it
  never reads the socket: user data does not pass through here), puts it in its own process
  group so a kill reaches the task's subprocesses too, and closes its copies at once.
* It learns every death from ``waitpid`` (woken by SIGCHLD through a wakeup pipe) and
  reports the exact exit status, the reason when it did the killing itself, and the task.
* When the control socket reaches end-of-file the owner is gone (even after ``kill -9``):
  it kills every worker's process group, reaps them and exits. Workers carry
  ``PR_SET_PDEATHSIG`` (Linux) so they die with the supervisor if it is killed.
* It enforces per-task deadlines published in the workers' progress slots.

How the owner starts it (forked, or as a fresh interpreter) is in ``_launch``.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass

from . import _oscalls as osc
from . import _proctable
from ._control import (
    TERM_GRACE,
    TIMEOUT,
    Channel,
    Goodbye,
    KillWorker,
    MemoryHigh,
    Message,
    Prepare,
    Samples,
    Shutdown,
    SpawnFailed,
    SpawnWorker,
    Watch,
    WorkerExited,
    WorkerStarted,
)
from ._wire import SLOT_DEADLINE, SLOT_PHASE, SLOT_TASK, Phase, map_slot

_REAP_GRACE = 5.0  # bound on waiting for SIGKILLed workers to be reaped on the way out
_HELD_AT_FORK = {signal.SIGTERM}
# The phases in which a kill aimed at one task (KillWorker.task_id) still stops that task.
_STOPPABLE = (Phase.LOADING, Phase.RUNNING, Phase.DUMPING)
_SAMPLE_EVERY = 0.5  # RSS sampling period without a memory limit
_SAMPLE_LIMITED = 0.1  # ... and with one
_HARD_FACTOR = 2  # a worker this many times over memory_limit is killed at once


def preload() -> None:
    """Import what the supervisor and its workers need, once, before they are forked.

    Whatever the owner has not imported, every forked supervisor and every worker would
    import again on its own (the worker module, cloudpickle and tblib, ctypes for prctl):
    that cost ~10 ms per process, paid at each pool's start on a machine with few cores.
    Here it is paid once per owner process, and the forks inherit the loaded modules.
    """
    from . import _worker  # noqa: F401  (it imports the serializers too)

    osc.libc()


def main(fd: int, owner_path: str) -> int:
    """Entry point of a supervisor started as a fresh interpreter."""
    import json  # only a fresh supervisor needs it: not imported by the forkserver's forks

    preload()
    sys.path[:] = json.loads(owner_path)  # what workers import (users' functions) resolves as in the owner
    return serve(fd)


@dataclass
class _Child:
    key: int
    pid: int
    slot: mmap.mmap
    view: memoryview
    reason: str | None = None
    task_id: int | None = None
    rss: int | None = None  # last RSS of the worker's process tree, bytes
    high: bool = False  # MemoryHigh already sent


def still_on(view: memoryview, task_id: int, after: tuple[int, ...] = ()) -> bool:
    """Whether a kill aimed at ``task_id`` (``KillWorker``; 0: at the worker, whatever it
    does) still stops that task. Yes while the worker's slot names it loading, running or
    pickling, and while the slot names an earlier task or none (the worker has not started
    it). No once its result is being sent (killing would lose what the owner is about to
    receive and clean), nor once the slot names one of ``after``, the tasks queued behind
    it (the worker is past it: the kill would land in someone else's task). Task ids do not
    say the order (a task run again after a death gets a new id), so ``after`` does."""
    if not task_id:
        return True
    slot_task = view[SLOT_TASK]
    if slot_task == task_id:
        return view[SLOT_PHASE] in _STOPPABLE
    return slot_task not in after


class _Supervisor:
    def __init__(self, fd: int) -> None:
        self.channel = Channel(socket.socket(fileno=fd))
        self.owner_alive = True
        self.children: dict[int, _Child] = {}
        self.stopping = False
        self.polite = False
        self.watch = _SAMPLE_EVERY  # RSS is always sampled, for the OOM diagnosis
        self.memory_limit: int | None = None
        self.next_sample = 0.0
        self.next_report = 0.0
        self.stop_deadline = 0.0
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, _ignore)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides what Ctrl-C means
        self.selector.register(self.channel.sock, selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.begin_stop(grace=1.0)

    # -- main loop --

    def run(self) -> int:
        while True:
            for key, _ in self.selector.select(self._timeout()):
                if key.data == "control":
                    self._read_control()
                else:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 4096):
                            pass
            self.reap()
            self.enforce_deadlines()
            self.sample()
            if self.stopping:
                if not self.children and not self.sweep():
                    if self.owner_alive:
                        with contextlib.suppress(OSError):
                            self.channel.send(Goodbye())
                    return 0
                if time.monotonic() >= self.stop_deadline:
                    if self.polite:
                        # They did not quit when asked: now the usual escalation.
                        self.polite = False
                        self.stop_deadline = time.monotonic() + TERM_GRACE
                        self._kill_all(signal.SIGTERM)
                        continue
                    self._kill_all(signal.SIGKILL)
                    if time.monotonic() >= self.stop_deadline + _REAP_GRACE:
                        return 1

    def _timeout(self) -> float | None:
        if self.stopping:
            return 0.01
        # Deadlines appear in the slots without any message, so a watched pool ticks.
        return self.watch if self.children else None

    def _read_control(self) -> None:
        try:
            alive = self.channel.receive()
        except OSError:
            alive = False
        if not alive:
            # The owner is gone (exited, crashed or was SIGKILLed): nobody will ever want
            # these workers' results, so stop them now rather than gracefully.
            self.owner_alive = False
            self.begin_stop(grace=0.0)
            return
        for msg, fds in self.channel.messages():
            self.handle(msg, fds)

    def handle(self, msg: Message, fds: list[int]) -> None:
        if isinstance(msg, SpawnWorker):
            self.spawn(msg.key, fds)
        elif isinstance(msg, KillWorker):
            self.kill(msg.key, msg.sig, msg.reason, msg.task_id, msg.after)
        elif isinstance(msg, Shutdown):
            self.begin_stop(msg.grace, polite=msg.polite)
        elif isinstance(msg, Prepare):
            import multiprocessing.process

            multiprocessing.process.current_process().authkey = msg.authkey
        elif isinstance(msg, Watch):
            self.watch = min(self.watch, msg.interval)
            if msg.memory_limit is not None:
                self.memory_limit = msg.memory_limit

    def send(self, msg: Message) -> None:
        if self.owner_alive:
            try:
                self.channel.send(msg)
            except OSError:
                self.owner_alive = False
                self.begin_stop(grace=0.0)

    # -- workers --

    def spawn(self, key: int, fds: list[int]) -> None:
        if len(fds) != 2 or self.stopping:
            for fd in fds:
                os.close(fd)
            self.send(SpawnFailed(key, "supervisor is stopping" if self.stopping else "missing descriptors"))
            return
        data_fd, slot_fd = fds
        slot, view = map_slot(slot_fd)
        osc.flush_std_streams()
        # SIGTERM (terminate, or a kill from outside) waits while we fork: until the new
        # worker restores the default action, our own Python handler would run in it and
        # swallow the signal, and the worker would run its tasks until the SIGKILL.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_AT_FORK)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(data_fd)
            os.close(slot_fd)
            view.release()
            slot.close()
            self.send(SpawnFailed(key, f"fork failed: {exc}"))
            return
        if pid == 0:  # pragma: no cover - runs in the new worker
            view.release()  # the supervisor's mapping of this slot, and the descriptor it holds
            slot.close()
            self._become_worker(data_fd, slot_fd, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done in the child; whichever runs first wins the race
        os.close(data_fd)
        os.close(slot_fd)
        if not self.children:
            # A worker just forked has nothing to measure yet; sampling now (psutil's import
            # and a scan of /proc) would only compete with the pool's start for the CPU.
            self.next_sample = max(self.next_sample, time.monotonic() + self._sample_period())
        self.children[pid] = _Child(key, pid, slot, view)
        self.send(WorkerStarted(key, pid))

    def _become_worker(self, data_fd: int, slot_fd: int, mask: set[int | signal.Signals]) -> None:
        code = 70
        try:
            gc.freeze()
            parent = os.getppid()
            with contextlib.suppress(OSError):
                os.setpgid(0, 0)
            osc.pdeathsig()
            osc.tune_malloc()
            if os.getppid() != parent:
                os._exit(1)  # the supervisor died before PDEATHSIG was armed
            signal.set_wakeup_fd(-1)
            osc.faulthandler_to_stderr()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGTERM held at fork kills us now
            self.selector.close()
            self.channel.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            for child in self.children.values():
                child.view.release()
                child.slot.close()
            osc.after_fork_in_worker()
            from ._worker import serve as serve_worker

            code = serve_worker(data_fd, slot_fd)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)

    def kill(self, key: int, sig: int, reason: str | None, task_id: int = 0, after: tuple[int, ...] = ()) -> None:
        for child in self.children.values():
            if child.key == key:
                if not still_on(child.view, task_id, after):
                    continue  # past that task: the owner reads its results and retires it
                if reason and child.reason is None:
                    child.reason = reason
                osc.kill_group(child.pid, sig)

    def enforce_deadlines(self) -> None:
        now = time.monotonic_ns()
        for child in self.children.values():
            deadline = child.view[SLOT_DEADLINE]
            if not deadline or now < deadline or child.reason is not None:
                continue
            if child.view[SLOT_PHASE] in (Phase.IDLE, Phase.INIT, Phase.REPLYING):
                continue  # not running a task (a finished task's result is not timed)
            task_id = child.view[SLOT_TASK]
            if child.view[SLOT_DEADLINE] != deadline:
                continue  # the worker moved on to another task while we looked
            child.reason = TIMEOUT
            child.task_id = task_id
            osc.kill_group(child.pid, signal.SIGKILL)

    def _sample_period(self) -> float:
        return _SAMPLE_LIMITED if self.memory_limit else _SAMPLE_EVERY

    def sample(self) -> None:
        """Measure each worker tree's RSS; enforce the memory limit; report samples; kill
        strays. One scan of the process table serves all of it, whatever the pool's size."""
        now = time.monotonic()
        period = self._sample_period()
        if not self.children or now < self.next_sample:
            return
        self.next_sample = now + period
        table = _proctable.scan()
        for child in self.children.values():
            rss = table.tree_rss(child.pid)
            if rss is not None:
                child.rss = rss
            if child.rss is None or not self.memory_limit or child.reason is not None:
                continue
            if child.rss > _HARD_FACTOR * self.memory_limit:
                child.reason = (
                    f"robustpool killed it: its memory (RSS {child.rss / 2**20:.0f} MiB) passed "
                    f"{_HARD_FACTOR} x memory_limit ({_HARD_FACTOR * self.memory_limit / 2**20:.0f} MiB)"
                )
                child.task_id = child.view[SLOT_TASK]
                osc.kill_group(child.pid, signal.SIGKILL)
            elif child.rss > self.memory_limit and not child.high:
                child.high = True
                self.send(MemoryHigh(child.key, child.rss))
        self.sweep(table)
        if now >= self.next_report:
            self.next_report = now + _SAMPLE_EVERY
            self.send(Samples(tuple((c.key, c.rss) for c in self.children.values() if c.rss is not None)))

    def reap(self) -> None:
        reaped = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            child = self.children.pop(pid, None)
            if child is None:
                continue  # a stray we killed (see sweep)
            # Subprocesses the task started are in the worker's group: they go with it.
            osc.kill_group(pid, signal.SIGKILL)
            code = os.waitstatus_to_exitcode(status)
            self.send(WorkerExited(child.key, pid, code, child.reason, child.task_id, child.rss))
            child.view.release()
            child.slot.close()
        if reaped:
            # A process that died left its children to us (we are a child subreaper).
            self.sweep()

    def sweep(self, table: _proctable.Table | None = None) -> int:
        """Kill every process reparented to us that is not a worker, with its whole tree:
        what tasks left behind (a task's own subprocess, daemons it started, their children
        once their parent is gone). The pool owns everything its tasks start, so none may
        outlive its worker. Returns how many live strays there were."""
        table = table or _proctable.scan()
        me = os.getpid()
        strays = [pid for pid in table.children.get(me, ()) if pid not in self.children and not table.procs[pid].zombie]
        for pid in strays:
            for victim in [*table.descendants(pid), pid]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(victim, signal.SIGKILL)
        return len(strays)

    def begin_stop(self, grace: float, polite: bool = False) -> None:
        deadline = time.monotonic() + max(0.0, grace)
        if self.stopping and deadline >= self.stop_deadline:
            return
        first = not self.stopping
        self.stopping = True
        self.polite = polite and first
        self.stop_deadline = deadline
        if not self.polite:
            self._kill_all(signal.SIGTERM if grace > 0 and first else signal.SIGKILL)

    def _kill_all(self, sig: int) -> None:
        """Signal every worker's group; SIGKILL also reaches each worker's whole tree (a
        task's subprocess in a session of its own is not in the worker's group)."""
        table = _proctable.scan() if sig == signal.SIGKILL else None
        for child in self.children.values():
            if table is not None:
                for pid in table.descendants(child.pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            osc.kill_group(child.pid, sig)


def _ignore(signum: int, frame: object) -> None:
    """SIGCHLD needs a handler (not SIG_IGN) so children stay reapable; the wakeup fd wakes us."""


def serve_forked(fd: int) -> int:
    """In a supervisor just forked (from the owner or the forkserver): close every inherited
    descriptor but the standard ones and the control socket ``fd``, then serve."""
    os.closerange(3, fd)
    os.closerange(fd + 1, osc.max_fd())
    osc.faulthandler_to_stderr()
    return serve(fd)


def serve(fd: int) -> int:
    """Run the supervisor loop on the control socket ``fd``; returns the exit code."""
    from .. import _zygote

    _zygote.never()  # nor in its workers: they are its forks
    os.set_inheritable(fd, False)
    osc.subreaper()
    sup = _Supervisor(fd)
    try:
        return sup.run()
    finally:
        sup.channel.sock.close()
        sup.selector.close()
