"""The control plane: typed messages between the owner and its supervisor.

The control socket is a Unix stream socket. Each message is a named tuple (immutable, and about
half a frozen dataclass's cost to define: this module is on the way to every first pool's
first result, in the owner and in the forkserver), pickled with the standard
pickler and length-prefixed; messages that hand over file descriptors (a new
worker's data socket and progress slot) carry them as SCM_RIGHTS ancillary data on the same
``sendmsg`` call. The receiver queues descriptors in arrival order and each message takes
the number it declares, so it does not matter how the kernel splits the byte stream.

Only robustpool's own types cross this socket: the supervisor never sees user data.
"""

from __future__ import annotations

import array
import pickle
import socket
import struct
from collections import deque
from typing import NamedTuple

_LEN = struct.Struct("<I")
_MAX_FDS = 16

# The reason WorkerExited carries when the supervisor killed the worker for its deadline.
TIMEOUT = "timeout"
# ... and when the owner had it killed because the task it ran was cancelled.
CANCELLED = "cancelled"
# Seconds between SIGTERM and SIGKILL when workers are stopped (terminate, or a close whose
# workers did not quit when asked).
TERM_GRACE = 1.0


# --- owner -> supervisor ------------------------------------------------------------------


class SpawnWorker(NamedTuple):
    """Fork a worker that uses the two attached descriptors: data socket, progress slot."""

    key: int
    nfds: int = 2


class KillWorker(NamedTuple):
    """Kill one worker's whole process group with ``sig``; ``reason`` is echoed back.

    With ``task_id`` (the oldest task the worker holds), only while the worker has not gone
    past that task: the owner asks for such a kill to stop one task, and by the time the
    message arrives the worker may have finished it and started one of the tasks queued
    behind it, ``after``, which must not die for it (nor must the finished task's results,
    on their way to the owner). A worker that has not reached the task yet is killed.
    """

    key: int
    sig: int
    reason: str | None = None
    task_id: int = 0
    after: tuple[int, ...] = ()


class Watch(NamedTuple):
    """Check the workers every ``interval`` seconds from now on: deadlines in their
    progress slots and, with ``memory_limit`` (bytes), the RSS of each worker's process
    tree. Sent at start when the pool has a memory limit, and before the first task that
    has a timeout."""

    interval: float
    memory_limit: int | None = None


class Prepare(NamedTuple):
    """Sent first to a supervisor started as a fresh interpreter: the owner's
    ``multiprocessing`` authkey, so manager proxies work in its workers."""

    authkey: bytes


class Shutdown(NamedTuple):
    """Stop every worker, reap them all, say Goodbye and exit.

    Polite: wait up to ``grace`` seconds for workers to exit by themselves (the owner has
    asked them to quit), then SIGTERM, then SIGKILL. Not polite: SIGTERM at once, SIGKILL
    after ``grace``.
    """

    grace: float
    polite: bool = False


# --- supervisor -> owner ------------------------------------------------------------------


class WorkerStarted(NamedTuple):
    key: int
    pid: int


class WorkerExited(NamedTuple):
    """A worker was reaped. ``exitcode`` is negative for a signal, as in Popen."""

    key: int
    pid: int
    exitcode: int
    reason: str | None = None
    task_id: int | None = None
    last_rss: int | None = None


class MemoryHigh(NamedTuple):
    """A worker's RSS passed the soft memory limit: recycle it after its current task."""

    key: int
    rss: int


class Samples(NamedTuple):
    """The latest RSS (bytes) of each worker's process tree, sent about twice a second."""

    rss: tuple[tuple[int, int], ...]


class SpawnFailed(NamedTuple):
    key: int
    error: str


class Goodbye(NamedTuple):
    """The supervisor has reaped every worker and is about to exit."""


Message = (
    SpawnWorker
    | KillWorker
    | Watch
    | Prepare
    | Shutdown
    | WorkerStarted
    | WorkerExited
    | MemoryHigh
    | Samples
    | SpawnFailed
    | Goodbye
)


class Channel:
    """One end of the control socket. Not thread-safe: one thread owns each end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._fds: deque[int] = deque()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: Message, fds: tuple[int, ...] = ()) -> None:
        body = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
        data = _LEN.pack(len(body)) + body
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            sent = self.sock.sendmsg([data], anc)
            if sent < len(data):
                self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)

    def receive(self) -> bool:
        """Read what is available; False on end of stream."""
        fds_size = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
        data, anc, _flags, _addr = self.sock.recvmsg(1 << 16, fds_size)
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
                self._fds.extend(fds)
        if not data:
            return False
        self._buf += data
        return True

    def messages(self) -> list[tuple[Message, list[int]]]:
        """Complete messages received so far, each with the descriptors it declared."""
        out: list[tuple[Message, list[int]]] = []
        pos = 0
        while len(self._buf) - pos >= _LEN.size:
            (size,) = _LEN.unpack_from(self._buf, pos)
            end = pos + _LEN.size + size
            if end > len(self._buf):
                break
            msg = pickle.loads(bytes(self._buf[pos + _LEN.size : end]))
            pos = end
            nfds = msg.nfds if isinstance(msg, SpawnWorker) else 0
            fds = [self._fds.popleft() for _ in range(min(nfds, len(self._fds)))]
            out.append((msg, fds))
        del self._buf[:pos]
        return out
