"""What our processes leave behind: processes, descriptors and ``/dev/shm`` entries.

Shared by ``robustpool.testing`` (the checks a user's chaos run gets) and the project's own
stress suite, so both count leaks the same way. Only what *our* processes made counts: the
machine may run other programs that create and leave ``/dev/shm`` entries meanwhile
(:class:`ShmSampler` tells the two apart).
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import threading
import time
from collections.abc import Container, Iterable, Mapping
from typing import NamedTuple

import psutil

#: /proc/self/fd may differ by this much after a run without a leak. Measured: 0 on
#: Linux; 2 leaves room for a descriptor the interpreter opens lazily once (e.g. a
#: selector's epoll object cached by a library) without hiding a per-pool leak, since a
#: run builds dozens of pools and a leak of one descriptor per pool shows as dozens.
FD_ALLOWANCE = 2

# --- processes and descriptors ------------------------------------------------------------


def wait_stopped(pid: int, timeout: float = 2.0) -> None:
    """Wait until ``pid`` is stopped (SIGSTOP is delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        while proc.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.0005)


def wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError as exc:
        return type(exc).__name__


def fd_count() -> int:
    """The owner's descriptors, without those of its forkserver (which lives as long as the
    owner, by design: it is not a leak)."""
    return len(_fds())


def _fds() -> list[str]:
    from .._process._forkserver import server_fds

    skip = {str(fd) for fd in server_fds()}
    return [fd for fd in os.listdir("/proc/self/fd") if fd not in skip]


def fd_targets() -> list[str]:
    out = []
    for fd in _fds():
        with contextlib.suppress(OSError):
            out.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
    return out


def descendants(pid: int) -> list[psutil.Process]:
    """Every process under ``pid``, but this process's forkserver (the supervisors it forked
    are counted: only the forkserver itself lives as long as its owner)."""
    from .._process._forkserver import server_pid

    forkserver = server_pid()
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.pid != forkserver]
    except psutil.Error:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    seen = set()
    for p in procs:
        if p.pid in seen:
            continue
        seen.add(p.pid)
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


# --- /dev/shm attribution -----------------------------------------------------------------

SHM_DIR = "/dev/shm"
SHM_PERIOD = 0.15  # seconds between two ticks of the sampler (see ShmSampler)
#: After inotify reports an entry created in /dev/shm, wait this long before sampling:
#: events come in bursts (glibc's sem_open creates a temporary name, then links the real
#: one), and the creator finishes its open()/mmap().
SHM_SETTLE = 0.001
#: The sampler's CPU budget, as a share of one core: after a tick that took t seconds of
#: CPU, the next waits at least t / SHM_MAX_CPU, so other programs that keep creating
#: entries cannot make it expensive. Measured on 2 busy cores: a tick costs 0.3-0.8 ms
#: (about 0.5% of a core at the period), a sample of a pool's 4-6 processes 1-2.5 ms on
#: top, so while other programs keep creating entries samples come every 0.1-0.2 s.
SHM_MAX_CPU = 0.02
#: Seconds after which a sample looks again for entries the last one did not find held.
SHM_RECHECK = 1.0
#: Entries named so are counted even if no sample saw them held (robustpool's progress
#: slots are memfds on Linux; a fallback elsewhere might name its entries like this).
SHM_OURS_PREFIX = "robustpool"
_IN_CREATE, _IN_MOVED_TO = 0x100, 0x80

ShmKey = tuple[int, int]  # (st_dev, st_ino): what an entry is, whatever name it has


class ShmStat(NamedTuple):
    dev: int
    ino: int
    is_dir: bool

    @property
    def key(self) -> ShmKey:
        return self.dev, self.ino


def shm_snapshot(directory: str = SHM_DIR) -> dict[str, ShmStat]:
    """Every entry of ``directory`` (not recursive), by name."""
    out: dict[str, ShmStat] = {}
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                out[entry.name] = ShmStat(st.st_dev, st.st_ino, stat.S_ISDIR(st.st_mode))
    return out


def shm_held(pid: int, directory: str = SHM_DIR) -> dict[ShmKey, str]:
    """The files under ``directory`` that process ``pid`` has mapped or open, by inode,
    each with the path that process sees.

    By inode, not by name: the creator of a POSIX semaphore maps it under glibc's temporary
    name, which sem_open() unlinks once it has linked the real one, so the creator's maps
    show ``/dev/shm/sem.XXXXXX (deleted)`` while the entry that stays is ``sem.<name>``
    (the same inode). A name-based check never sees who created a semaphore.
    """
    held: dict[ShmKey, str] = {}
    prefix = directory.rstrip("/") + "/"
    maps = _read_proc(f"/proc/{pid}/maps")
    needle = b" " + os.fsencode(prefix)
    if needle in maps:
        for line in maps.splitlines():
            if needle in line:
                # address perms offset major:minor inode path
                parts = line.split(None, 5)
                with contextlib.suppress(ValueError, IndexError):
                    major, minor = parts[3].split(b":")
                    key = (os.makedev(int(major, 16), int(minor, 16)), int(parts[4]))
                    held.setdefault(key, parts[5].decode(errors="replace"))
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        fds = []
    for fd in fds:
        path = f"{fd_dir}/{fd}"
        with contextlib.suppress(OSError):
            target = os.readlink(path)
            if target.startswith(prefix):
                st = os.stat(path)
                held.setdefault((st.st_dev, st.st_ino), target)
    return held


def shm_leaks(
    before: Mapping[str, ShmStat],
    after: Mapping[str, ShmStat],
    held: Container[ShmKey],
) -> list[str]:
    """The entries of ``after`` this run leaked: not there at the start (same name, same
    inode), and either held (mapped or open, under any name) by one of our processes when
    a sample looked, or a non-directory named with robustpool's prefix. Entries other
    programs created are never counted, whether they are still open or were left behind.
    """
    leaked = []
    for name, st in sorted(after.items()):
        if before.get(name) == st:
            continue
        ours_by_name = not st.is_dir and name.removeprefix("sem.").startswith(SHM_OURS_PREFIX)
        if st.key in held or ours_by_name:
            leaked.append(name)
    return leaked


def _proc_stat(pid: int, live_only: bool = False) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of ``pid``, from /proc/<pid>/stat; None if it is
    gone (or, with ``live_only``, a zombie)."""
    data = _read_proc(f"/proc/{pid}/stat")
    try:
        fields = data[data.rindex(b")") + 2 :].split()  # from field 3 (state) on
        if live_only and fields[0] in (b"Z", b"X"):
            return None
        return int(fields[1]), int(fields[19])
    except (ValueError, IndexError):
        return None


def _read_proc(path: str) -> bytes:
    """A /proc file's bytes (empty if it is gone): plain os.read, a third cheaper than open()."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 17):
            chunks.append(chunk)
    except OSError:
        return b""
    finally:
        os.close(fd)
    return b"".join(chunks)


def _inotify_fd(directory: str) -> int:
    """A non-blocking inotify descriptor watching ``directory`` for new entries, or -1."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))  # IN_NONBLOCK | IN_CLOEXEC
    except (OSError, AttributeError):
        return -1  # no inotify (macOS)
    if fd < 0:
        return -1  # e.g. no instance left (fs.inotify.max_user_instances): ticks only
    if libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CREATE | _IN_MOVED_TO) < 0:
        os.close(fd)
        return -1
    return fd


class ShmSampler:
    """Records every /dev/shm inode one of our processes holds while the run goes on.

    Our processes: ``owner`` (the runner), its descendants, and any pid given to
    :meth:`adopt` (the supervisors and workers the runner saw). Once ours, a process stays
    ours until it exits, even when it is reparented (a worker whose supervisor was killed).

    A thread *ticks* every ``period`` seconds and, where inotify works, ``SHM_SETTLE``
    after any entry is created in ``directory``. A tick lists ``/proc`` to keep the table
    of our processes up to date (``/proc/<pid>/stat`` is read once per new process) and
    then, only if ``directory`` holds an entry that is new since the start, that no
    sample has seen one of our processes hold and that no sample has looked for yet (or
    looked for ``SHM_RECHECK`` ago), *samples*: reads ``/proc/<pid>/maps`` and
    ``/proc/<pid>/fd`` of each of our processes (the expensive part). Little is lost by
    skipping the others: an entry that is not there cannot be left behind. So on a quiet
    machine the sampler costs almost nothing, and when other programs keep creating
    entries, the ``SHM_MAX_CPU`` budget caps it.

    :meth:`sample` takes one sample now (the tests call it without the thread).
    """

    def __init__(self, owner: int, period: float = SHM_PERIOD, directory: str = SHM_DIR) -> None:
        self.owner = owner
        self.period = period
        self.directory = directory
        self.enabled = os.path.isdir("/proc") and os.path.isdir(directory)
        self.held: dict[ShmKey, tuple[int, str]] = {}  # inode -> (pid, path) of its first holder seen
        self.ticks = 0
        self.samples = 0
        self.triggered = 0  # ticks an inotify event (an entry created) asked for
        self.cpu = 0.0  # CPU seconds of every tick and sample (thread time)
        self.slowest = 0.0  # wall seconds of the slowest sample
        self.inotify = False
        self._baseline: set[ShmKey] = set()  # what was there at start()
        self._dev = 0
        self._known: dict[int, tuple[int, int]] = {}  # every live pid seen -> (ppid, start time)
        self._ours: dict[int, int] = {}  # pid -> start time
        # Adopted processes and their descendants, ever seen (dead ones stay): the processes
        # of the pools, told apart from what else the owner started (see leftovers()).
        self.pool_procs: dict[int, int] = {}
        self._adopted: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._not_before = 0.0  # no tick before this (monotonic): the CPU budget
        self._looked: set[ShmKey] = set()  # unexplained entries the last sample looked for
        self._recheck = 0.0  # when to look for them again (monotonic)

    def adopt(self, pids: Iterable[int]) -> None:
        """Count these (live) processes as ours from the next tick on."""
        self._adopted.extend(pids)

    def start(self, baseline: Mapping[str, ShmStat] | None = None) -> None:
        """Start the thread; ``baseline`` is what ``directory`` held at the start."""
        if not self.enabled or self._thread is not None:
            return
        with contextlib.suppress(OSError):
            self._dev = os.stat(self.directory).st_dev
        self._baseline = {st.key for st in (shm_snapshot(self.directory) if baseline is None else baseline).values()}
        self._fd = _inotify_fd(self.directory)
        self.inotify = self._fd >= 0
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="stress-shm-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and take one last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.sample()

    def sample(self) -> None:
        """Look now at what each of our processes holds."""
        self._tick(force=True)

    def leftovers(self, exclude: Container[int] = ()) -> list[int]:
        """Pool processes (adopted ones and their descendants) that are still alive, the
        same process as when seen (same start time), except the pids in ``exclude``."""
        with self._lock:
            self._refresh()
            return [
                pid
                for pid, started in self.pool_procs.items()
                if pid not in exclude and (info := _proc_stat(pid, live_only=True)) is not None and info[1] == started
            ]

    def _loop(self) -> None:
        poller = select.poll()
        if self._fd >= 0:
            poller.register(self._fd, select.POLLIN)
        due = time.monotonic() + self.period  # the next periodic tick
        while not self._stop.is_set():
            timeout = max(due - time.monotonic(), 0.0)
            if self._fd >= 0:
                created = bool(poller.poll(timeout * 1000))
            else:
                self._stop.wait(timeout)
                created = False
            if self._stop.is_set():
                return
            if created:
                # Let the burst finish (and respect the CPU budget), then drain it: one
                # tick for every event that came meanwhile.
                self._stop.wait(max(SHM_SETTLE, self._not_before - time.monotonic()))
                with contextlib.suppress(OSError):
                    while os.read(self._fd, 65536):
                        pass
                self.triggered += 1
            elif time.monotonic() < due:
                continue
            self._tick()
            due = max(time.monotonic() + self.period, self._not_before)

    def _tick(self, force: bool = False) -> None:
        if not self.enabled:
            return
        with self._lock:
            cpu = time.thread_time()
            ours = self._refresh()
            self.ticks += 1
            due, unexplained = self._unexplained()
            if force or due:
                wall = time.perf_counter()
                for pid in ours:
                    for key, path in shm_held(pid, self.directory).items():
                        self.held.setdefault(key, (pid, path))
                self.samples += 1
                self.slowest = max(self.slowest, time.perf_counter() - wall)
                self._looked = unexplained - self.held.keys()
                self._recheck = time.monotonic() + SHM_RECHECK
            spent = time.thread_time() - cpu
            self.cpu += spent
            if not force:  # the first and last samples are outside the budget
                self._not_before = time.monotonic() + spent / SHM_MAX_CPU

    def _unexplained(self) -> tuple[bool, set[ShmKey]]:
        """The entries of ``directory`` new since the start that no sample saw held, and
        whether to sample now: one of them was never looked for yet, or ``SHM_RECHECK``
        passed since the last sample (an entry another program left behind must not keep
        the sampler busy for the rest of the run)."""
        try:
            with os.scandir(self.directory) as entries:
                keys = {(self._dev, entry.inode()) for entry in entries}
        except OSError:
            return True, set()
        keys -= self._baseline
        keys -= self.held.keys()
        return bool(keys - self._looked) or (bool(keys) and time.monotonic() >= self._recheck), keys

    def _refresh(self) -> list[int]:
        """Update the process table; returns the pids of our live processes.

        One listing of /proc, and /proc/<pid>/stat read once per process that appeared
        since the last tick (a pid reused within one period would be missed; with the
        kernel's cyclic pid allocation that takes pid_max forks in that time).
        """
        try:
            live = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        except OSError:
            return []
        for pid in self._known.keys() - live:
            del self._known[pid]
            self._ours.pop(pid, None)
        new = []
        for pid in live - self._known.keys():
            info = _proc_stat(pid)
            if info is not None:
                self._known[pid] = info
                new.append(pid)
        while self._adopted:
            pid = self._adopted.pop()
            info = self._known.get(pid) or _proc_stat(pid)  # it may have started after the listing
            if info is not None:
                self._known[pid] = info
                self._ours[pid] = info[1]
                self.pool_procs[pid] = info[1]
        if self.owner in self._known:
            self._ours.setdefault(self.owner, self._known[self.owner][1])
        # New children of our processes are ours, grandchildren too (fixpoint: a parent
        # and its child often share a start time, so no order is reliable).
        grew = True
        while grew and new:
            grew = False
            rest = []
            for pid in new:
                if self._known[pid][0] in self._ours:
                    self._ours[pid] = self._known[pid][1]
                    if self._known[pid][0] in self.pool_procs:
                        self.pool_procs[pid] = self._known[pid][1]
                    grew = True
                else:
                    rest.append(pid)
            new = rest
        return list(self._ours)
