"""SECURITY.md's claims, checked on running pools: real processes, real sockets, no mocks.

Each pool kind (``RobustPool(2)`` with its supervisor forked, ``RobustPool(2)`` with its
supervisor started as a fresh interpreter, and ``RobustThreadPool(2)``) runs two tasks that
block until the test opens a gate. While they block, and again once the pool is closed and
joined, the test reads from ``/proc`` what *our* processes hold:

* Our processes are the owner (this process) and every process created under it since the
  pool was made (the supervisor and its workers). Of the owner, only what it opened after
  the pool was made counts: pytest's files, its capture files and the std streams are the
  test's, not the pool's. Of the children, everything counts except the files the owner
  already held before the pool was made (the std streams they inherit).
* A descriptor is judged by what ``/proc/<pid>/fd/<n>`` leads to. A socket is looked up by
  its inode in the tables of the process's network namespace (``/proc/<pid>/net/unix``,
  ``tcp``, ``udp``, ...): those list every socket of the namespace, other programs'
  included, so only our inodes are looked up in them.

What the tests cannot know: a file that one of our processes creates *and* closes between
two snapshots is seen only if it is still there at the end. In the shared ``/dev/shm`` and
system temporary directory, where other programs come and go (other test runs leave
``robustpool-bench-*`` and ``robustpool-stateful-*`` directories in /tmp), an entry is
attributed to us only if one of our processes held it open (or mapped it) while the tasks
ran, or if it bears the progress slot's name (``robustpool-slot``). For the temporary
directory the test also runs the pool with ``TMPDIR`` (and ``tempfile.tempdir``) pointing at
a private, empty directory that nothing else writes to, and requires it to be empty at the
end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

import robustpool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")

KINDS = ["fork", "spawn", "threads"]
START_METHODS = ["fork", "forkserver", "spawn"]
WAIT = 10.0  # the bound on every wait
SHM = "/dev/shm"
SYSTEM_TMP = os.path.realpath(tempfile.gettempdir())  # read at import, before a test redirects TMPDIR
_LISTENING = 0x10000  # __SO_ACCEPTCON, in the Flags column of /proc/net/unix
_INET_TABLES = ("tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6")
_NAMELESS = ("socket:", "pipe:", "anon_inode:", "/memfd:")  # descriptors with no name in any directory
_SLOT_NAME = "robustpool-slot"  # the name robustpool gives its progress slots (memfds, on Linux)

Pool = robustpool.RobustPool | robustpool.RobustThreadPool


# --- what the tasks run (module level: workers import it by name) -------------------------


def _hold(gate: str) -> int:
    """Say that the task started, then wait (bounded) until the test opens the gate."""
    marker = os.path.join(gate, f"started-{os.getpid()}-{threading.get_ident()}")
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    deadline = time.monotonic() + WAIT
    while not os.path.exists(os.path.join(gate, "open")):
        if time.monotonic() > deadline:
            raise TimeoutError("the test did not open the gate in time")
        time.sleep(0.005)
    return os.getpid()


class _RunsOnUnpickling:
    """Whoever unpickles this calls ``os.getpid()``: pickle data is a program."""

    def __reduce__(self) -> tuple[Callable[[], int], tuple[()]]:
        return os.getpid, ()


def _result_that_runs_code() -> _RunsOnUnpickling:
    return _RunsOnUnpickling()


# --- what a process holds, from /proc ------------------------------------------------------


@dataclass(frozen=True)
class Fd:
    fd: int
    target: str  # what /proc/<pid>/fd/<fd> links to: a path, socket:[ino], pipe:[ino], /memfd:...
    dev: int
    ino: int  # for a socket, its socket inode
    mode: int

    @property
    def key(self) -> tuple[int, int, int]:
        return self.fd, self.dev, self.ino


@dataclass(frozen=True)
class Proc:
    pid: int
    role: str  # owner, supervisor, worker, or descendant (a process under a worker)
    fds: tuple[Fd, ...]
    shared_maps: tuple[tuple[str, str], ...]  # (address range, path) of MAP_SHARED file mappings

    def __str__(self) -> str:
        return f"{self.role} {self.pid}"

    def sockets(self) -> list[Fd]:
        return [fd for fd in self.fds if stat.S_ISSOCK(fd.mode)]


def _fds(pid: int) -> list[Fd]:
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except (FileNotFoundError, ProcessLookupError):
        return []  # the process is gone
    out = []
    for name in names:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # closed meanwhile
            target = os.readlink(f"{base}/{name}")
            st = os.stat(f"{base}/{name}")
            out.append(Fd(int(name), target, st.st_dev, st.st_ino, st.st_mode))
    return out


def _shared_maps(pid: int) -> list[tuple[str, str]]:
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    out = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)  # range perms offset dev inode path
        if len(parts) == 6 and parts[1][3] == "s" and parts[5].startswith("/"):
            out.append((parts[0], parts[5]))
    return out


def _still_holds(pid: int, fd: Fd) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd.fd}") == fd.target
    except OSError:
        return False


@dataclass(frozen=True)
class Baseline:
    """The owner just before the pool was made."""

    fds: frozenset[tuple[int, int, int]]
    files: frozenset[tuple[int, int]]  # (dev, ino) of everything it held
    maps: frozenset[tuple[str, str]]
    children: frozenset[int]

    @classmethod
    def take(cls) -> Baseline:
        fds = _fds(os.getpid())
        return cls(
            frozenset(fd.key for fd in fds),
            frozenset((fd.dev, fd.ino) for fd in fds),
            frozenset(_shared_maps(os.getpid())),
            frozenset(p.pid for p in psutil.Process().children(recursive=True)),
        )


def _processes(base: Baseline, roles: dict[int, str]) -> list[Proc]:
    """The owner (what it opened since ``base``) and the live processes made under it since
    (everything they hold but the files the owner held at ``base``)."""
    me = os.getpid()
    owner = Proc(
        me,
        "owner",
        tuple(fd for fd in _fds(me) if fd.key not in base.fds),
        tuple(m for m in _shared_maps(me) if m not in base.maps),
    )
    procs = [owner]
    for child in psutil.Process().children(recursive=True):
        if child.pid in base.children:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            fds = tuple(fd for fd in _fds(child.pid) if (fd.dev, fd.ino) not in base.files)
            procs.append(Proc(child.pid, roles.get(child.pid, "descendant"), fds, tuple(_shared_maps(child.pid))))
    return procs


def _unix_sockets(pid: int) -> dict[int, tuple[int, str]]:
    """inode -> (flags, name) of every AF_UNIX socket in the network namespace of ``pid``
    (an unnamed socket, such as either end of a socketpair, has the name '')."""
    try:
        lines = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    except (FileNotFoundError, ProcessLookupError):
        return {}
    out = {}
    for line in lines:
        parts = line.split(maxsplit=7)  # Num RefCount Protocol Flags Type St Inode [Path]
        out[int(parts[6])] = (int(parts[3], 16), parts[7] if len(parts) > 7 else "")
    return out


def _inet_sockets(pid: int) -> dict[int, str]:
    """inode -> description of every IPv4/IPv6 socket in the network namespace of ``pid``."""
    out = {}
    for table in _INET_TABLES:
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in lines:
            parts = line.split()  # sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...
            state = " (LISTEN)" if table.startswith("tcp") and parts[3] == "0A" else f" (state {parts[3]})"
            out[int(parts[9])] = f"{table} {parts[1]}{state}"
    return out


def _unix_peers() -> dict[int, int]:
    """Every AF_UNIX socket of our network namespace -> its peer's inode (0: none), from
    the kernel's sock_diag netlink interface (what ``ss -x`` shows). Raises OSError where
    the kernel does not offer it."""
    netlink_sock_diag, sock_diag_by_family = 4, 20
    nlm_f_request, nlm_f_dump, nlmsg_error, nlmsg_done = 0x1, 0x300, 2, 3
    udiag_show_peer, unix_diag_peer = 0x4, 2
    req = struct.pack("=BBHIII8x", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, udiag_show_peer)
    msg = struct.pack("=IHHII", 16 + len(req), sock_diag_by_family, nlm_f_request | nlm_f_dump, 1, 0) + req
    peers: dict[int, int] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, netlink_sock_diag) as nl:
        nl.settimeout(WAIT)
        nl.sendto(msg, (0, 0))
        while True:
            data = nl.recv(1 << 20)
            pos = 0
            while pos + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, pos)
                if length < 16:
                    raise OSError(f"a malformed netlink message ({length} bytes)")
                if kind == nlmsg_done:
                    return peers
                if kind == nlmsg_error:
                    (err,) = struct.unpack_from("=i", data, pos + 16)
                    raise OSError(-err, os.strerror(-err))
                (ino,) = struct.unpack_from("=I", data, pos + 20)  # unix_diag_msg.udiag_ino
                peer, at, end = 0, pos + 32, pos + length  # attributes follow the 16-byte message
                while at + 4 <= end:
                    alen, atype = struct.unpack_from("=HH", data, at)
                    if alen < 4:
                        break
                    if atype == unix_diag_peer:
                        (peer,) = struct.unpack_from("=I", data, at + 4)
                    at += (alen + 3) & ~3
                peers[ino] = peer
                pos += (length + 3) & ~3


# --- the judgements -----------------------------------------------------------------------


def _judged_dirs() -> list[str]:
    return sorted({SYSTEM_TMP, os.path.realpath(tempfile.gettempdir()), SHM})


def _under(path: str, dirs: Iterable[str]) -> bool:
    return any(path.startswith(d.rstrip("/") + "/") for d in dirs)


def _socket_problems(procs: list[Proc]) -> list[str]:
    """Every socket must be an AF_UNIX socket with no name (no path, no abstract name) that
    is not listening: no IPv4/IPv6 socket at all, listening or not."""
    problems = []
    for p in procs:
        socks = p.sockets()
        if not socks:
            continue
        unix, inet = _unix_sockets(p.pid), _inet_sockets(p.pid)
        for fd in socks:
            if fd.ino in inet:
                problems.append(f"{p}: fd {fd.fd} is an internet socket: {inet[fd.ino]}")
            elif fd.ino not in unix:
                if _still_holds(p.pid, fd):
                    problems.append(f"{p}: fd {fd.fd} ({fd.target}) is a socket of another family than AF_UNIX")
            else:
                flags, name = unix[fd.ino]
                if name:
                    what = "an abstract name" if name.startswith("@") else "a path"
                    problems.append(f"{p}: fd {fd.fd} is a UNIX socket bound to {what}: {name!r}")
                if flags & _LISTENING:
                    problems.append(f"{p}: fd {fd.fd} is a listening UNIX socket")
    return problems


def _mapped_mode(pid: int, address: str, path: str) -> int | None:
    for where in (f"/proc/{pid}/map_files/{address}", path):
        with contextlib.suppress(OSError):
            return os.stat(where).st_mode
    return None  # unlinked, and map_files is closed to us: it has no name anyone could open


def _file_problems(procs: list[Proc]) -> list[str]:
    """No regular file or directory under the temporary directory or /dev/shm that one of
    our processes holds open or has mapped shared may be accessible to others (mode & 0o007).
    Sockets, pipes, anonymous inodes and memfds have no name in any directory: skipped."""
    dirs = _judged_dirs()
    problems = []
    for p in procs:
        for fd in p.fds:
            if fd.target.startswith(_NAMELESS) or not (stat.S_ISREG(fd.mode) or stat.S_ISDIR(fd.mode)):
                continue
            if _under(fd.target.removesuffix(" (deleted)"), dirs) and fd.mode & 0o007:
                problems.append(f"{p}: fd {fd.fd} is {fd.target}, mode {stat.filemode(fd.mode)}")
        for address, path in p.shared_maps:
            if not _under(path.removesuffix(" (deleted)"), dirs):
                continue
            mode = _mapped_mode(p.pid, address, path.removesuffix(" (deleted)"))
            if mode is not None and mode & 0o007:
                problems.append(f"{p}: maps {path} shared, mode {stat.filemode(mode)}")
    return problems


def _held_paths(procs: list[Proc]) -> set[str]:
    """Paths under the judged directories that our processes hold open or map (and that
    were not yet unlinked)."""
    dirs = _judged_dirs()
    paths = {fd.target for p in procs for fd in p.fds if not fd.target.startswith(_NAMELESS)}
    paths |= {path for p in procs for _, path in p.shared_maps}
    return {path for path in paths if _under(path, dirs) and not path.endswith(" (deleted)")}


# --- one pool, with two tasks running -----------------------------------------------------


def _make_pool(kind: str) -> Pool:
    if kind == "threads":
        return robustpool.RobustThreadPool(2)
    return robustpool.RobustPool(2, start_method=kind)


def _wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


Check = Callable[[str, list[Proc]], None]


def _scenario(kind: str, tmp_path: Path, check: Check) -> None:
    """Run ``check`` on our processes while two tasks of a ``kind`` pool run, then on what is
    left of them once the pool is closed and joined."""
    gate = tmp_path / "gate"
    gate.mkdir()
    base = Baseline.take()
    roles: dict[int, str] = {}
    pool = _make_pool(kind)
    try:
        futures = [pool.submit(_hold, str(gate)) for _ in range(2)]
        try:
            _wait_until(lambda: len(list(gate.glob("started-*"))) == 2, "both tasks to start")
            if isinstance(pool, robustpool.RobustPool):
                # The tasks' own pids: worker_pids() may not list a worker before its first result.
                workers = {int(m.name.split("-")[1]) for m in gate.glob("started-*")}
                roles = {pool.supervisor_pid: "supervisor", **dict.fromkeys(workers, "worker")}
            running = _processes(base, roles)
            if isinstance(pool, robustpool.RobustPool):
                _check_tree(running, pool.supervisor_pid)
            else:
                assert [p.role for p in running] == ["owner"], "a thread pool made processes"
            check("while the tasks run", running)
        finally:
            (gate / "open").touch()
        for future in futures:
            future.result(timeout=WAIT)
        pool.close()
        pool.join(WAIT)
    except BaseException:
        pool.terminate()
        raise
    # join() returns once every worker has quit; the processes end just after (the kernel's
    # teardown is not waited for: see robustpool._process._reaper). Nothing may stay.
    _wait_until(lambda: [p.role for p in _processes(base, roles)] == ["owner"], "the pool's processes to end")
    check("after close and join", _processes(base, roles))


def _check_tree(procs: list[Proc], supervisor: int) -> None:
    """The pool's processes are what the README says: the owner's child, the supervisor, is
    the parent of the two workers, and nothing else runs under the owner."""
    by_role = {p.role: [q.pid for q in procs if q.role == p.role] for p in procs}
    assert by_role.get("supervisor") == [supervisor], by_role
    assert len(by_role.get("worker", [])) == 2, by_role
    assert "descendant" not in by_role, by_role
    assert psutil.Process(supervisor).ppid() == os.getpid()
    for pid in by_role["worker"]:
        assert psutil.Process(pid).ppid() == supervisor


# --- the claims ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_no_socket_listens_or_has_a_name(kind: str, tmp_path: Path) -> None:
    """Nothing listens on a network port or a filesystem path: every socket our processes
    hold is an unnamed, non-listening AF_UNIX socket (no internet socket of any kind, no
    path, no abstract name)."""

    def check(when: str, procs: list[Proc]) -> None:
        problems = _socket_problems(procs)
        assert not problems, f"{when}:\n" + "\n".join(problems)

    _scenario(kind, tmp_path, check)


@pytest.mark.parametrize("kind", KINDS)
def test_every_socket_is_a_pair_between_our_processes(kind: str, tmp_path: Path) -> None:
    """The sockets are socketpair()s: each one's peer is a socket one of our processes holds.
    Each worker holds exactly one socket, whose other end the owner holds (one pipe per
    worker, nothing shared); the supervisor holds exactly one, the control socket, whose
    other end the owner holds too; no two of them hold the same socket."""
    try:
        _unix_peers()
    except OSError as exc:
        pytest.skip(f"the kernel offers no sock_diag for AF_UNIX here: {exc}")

    def check(when: str, procs: list[Proc]) -> None:
        peers = _unix_peers()
        owner_sockets = {fd.ino for fd in _fds(os.getpid()) if stat.S_ISSOCK(fd.mode)}  # its older ones too
        ours = owner_sockets | {fd.ino for p in procs for fd in p.sockets()}
        problems = []
        for p in procs:
            for fd in p.sockets():
                peer = peers.get(fd.ino)
                if not _still_holds(p.pid, fd):
                    continue  # closed while we looked
                if peer is None:
                    problems.append(f"{p}: fd {fd.fd} is not an AF_UNIX socket")
                elif peer not in ours:
                    problems.append(f"{p}: fd {fd.fd} ({fd.target}) is connected to socket {peer or 'none'}, not ours")
        assert not problems, f"{when}:\n" + "\n".join(problems)
        children = [p for p in procs if p.role != "owner"]
        if when != "while the tasks run" or not children:
            return
        for p in children:
            socks = p.sockets()
            assert len(socks) == 1, f"{p} holds {len(socks)} sockets: {[fd.target for fd in socks]}"
            assert peers[socks[0].ino] in owner_sockets, f"{p}'s socket is not connected to the owner"
        inodes = [p.sockets()[0].ino for p in children]
        assert len(set(inodes)) == len(inodes), f"a socket is shared: {[(str(p), p.sockets()[0].target) for p in children]}"

    _scenario(kind, tmp_path, check)


@pytest.mark.parametrize("kind", KINDS)
def test_no_file_in_tmp_or_shm_is_accessible_to_others(kind: str, tmp_path: Path) -> None:
    """No regular file or directory under the temporary directory or /dev/shm that our
    processes hold open or have mapped is readable, writable or searchable by others; the
    only memfds they hold are progress slots (which have no name in any directory)."""

    def check(when: str, procs: list[Proc]) -> None:
        problems = _file_problems(procs)
        # The only files without a name that the pool makes are its progress slots.
        problems += [
            f"{p}: fd {fd.fd} is {fd.target}, not a progress slot"
            for p in procs
            for fd in p.fds
            if fd.target.startswith("/memfd:") and not fd.target.startswith(f"/memfd:{_SLOT_NAME}")
        ]
        assert not problems, f"{when}:\n" + "\n".join(problems)

    _scenario(kind, tmp_path, check)


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_is_left_in_tmp_or_shm(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After close and join nothing of ours is left: the private temporary directory the pool
    ran with is empty; nothing our processes held under /dev/shm or the system temporary
    directory while the tasks ran is still there; no new entry there bears the slot's name."""
    private = tmp_path / "tmpdir"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("TMPDIR", str(private))  # a spawned supervisor reads it
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # the owner and what it forks
    before = {d: set(os.listdir(d)) for d in (SYSTEM_TMP, SHM) if os.path.isdir(d)}
    held: set[str] = set()

    def check(when: str, procs: list[Proc]) -> None:
        held.update(_held_paths(procs))

    _scenario(kind, tmp_path, check)
    assert sorted(os.listdir(private)) == []
    assert sorted(path for path in held if os.path.lexists(path)) == []
    named = {d: sorted(n for n in set(os.listdir(d)) - names if _SLOT_NAME in n) for d, names in before.items()}
    assert named == {d: [] for d in before}


def test_spawned_supervisor_boots_without_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervisor started as a fresh interpreter runs with -P, in the owner's working
    directory: modules planted there (json, selectors, cloudpickle, tblib: all imported
    while it boots) are not imported."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    marks, argv, _ = _boot_with_decoys(tmp_path, monkeypatch)
    assert "-P" in argv[: argv.index("-c")], argv
    assert marks == []


def test_pythonpath_with_an_empty_entry_puts_the_working_directory_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit SECURITY.md states: -P does not drop an empty (or relative) PYTHONPATH
    entry, which means the working directory. Unless the owner runs with -E or -I (which
    the supervisor inherits), the planted modules are then what the supervisor imports."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep)
    marks, _, supervisor = _boot_with_decoys(tmp_path, monkeypatch)
    if sys.flags.ignore_environment or sys.flags.isolated:
        assert marks == []
    else:
        assert {name.split("-")[0] for name in marks} == set(_DECOYS)
        assert {int(name.split("-")[1]) for name in marks} == {supervisor}, "only the supervisor imported them"


_DECOYS = ("json", "selectors", "cloudpickle", "tblib")
_DECOY = textwrap.dedent(
    '''
    """A decoy planted in the working directory: notes who imported it, then hands over
    the real module, so that a supervisor that imports it still works."""
    import importlib, os, sys
    with open(os.path.join({marks!r}, f"{{__name__}}-{{os.getpid()}}"), "w"):
        pass
    _here = os.path.dirname(os.path.abspath(__file__))
    _saved = sys.path[:]
    sys.path[:] = [p for p in _saved if os.path.abspath(p or os.curdir) != _here]
    try:
        del sys.modules[__name__]
        _real = importlib.import_module(__name__)
    finally:
        sys.path[:] = _saved
    sys.modules[__name__] = _real
    '''
)


def _boot_with_decoys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str], int]:
    """Start a spawned supervisor in a directory holding the decoys; run one task. Returns
    the decoys' marks (``name-pid``), the supervisor's command line and its pid."""
    cwd, marks = tmp_path / "cwd", tmp_path / "marks"
    cwd.mkdir()
    marks.mkdir()
    for name in _DECOYS:
        (cwd / f"{name}.py").write_text(_DECOY.format(marks=str(marks)))
    monkeypatch.chdir(cwd)
    with robustpool.RobustPool(1, start_method="spawn") as pool:
        assert pool.apply_async(os.getpid).get(timeout=WAIT) != os.getpid()
        supervisor = pool.supervisor_pid
        argv = psutil.Process(supervisor).cmdline()
        assert psutil.Process(supervisor).cwd() == os.getcwd(), "it runs in the owner's working directory"
    return sorted(os.listdir(marks)), argv, supervisor


@pytest.mark.parametrize("start_method", START_METHODS)
def test_unpickling_a_result_runs_code_in_the_owner(start_method: str) -> None:
    """Pickle is code execution: whatever a worker sends as a result, the owner runs when it
    unpickles it. Here a result's unpickling calls os.getpid() -- in the owner."""
    with robustpool.RobustPool(1, start_method=start_method) as pool:
        value: object = pool.apply_async(_result_that_runs_code).get(timeout=WAIT)
    assert value == os.getpid()
