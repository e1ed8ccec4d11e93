"""The data plane's wire format: frames on each worker's pipe, and the worker's progress slot.

Each worker has one duplex stream socket to the owner. Both directions carry frames::

    [u32 payload length][u8 kind][payload]

    owner -> worker   INIT   pickled (initializer, initargs), or empty     (always first)
                      FUNC   [i64 func_id] pickled callable                 (once per worker)
                      TASK   [i64 task_id][i64 func_id][u8 mode][u8 stream][f64 timeout]
                             pickled items
                      QUIT   empty: finish and exit 0
    worker -> owner   READY       [i64 pid]
                      INIT_FAILED encoded exception
                      RESULT      [i64 task_id][u8 status][f64 seconds spent]
                                  [u32 first item][u32 item count] payload

A RESULT covers items ``first .. first+count-1`` of its task. A task's results come in one
RESULT, except for a *stream* task (items the owner batched on its own, for an ``imap`` with
chunksize 1), whose items are separate tasks to the user that merely shared a frame on the
way in: their outcomes are sent in as many RESULTs as needed so that none waits behind a
slow neighbour. The payload depends on the status: OK, a pickled list of the values (builtin
data only, or a single item); ITEMS, a pickled list of ``(Entry, data)``, one per item, where
data is a builtin scalar (VALUE), the item's value pickled alone (PICKLED) or an encoded
exception (ERROR); LOAD_FAILED, one encoded exception that fails every item.

The progress slot is a small shared-memory page per worker (an mmap of a memfd), written by
the worker and read by the owner and the supervisor. It replaces acknowledgement frames:
before touching a task the worker stores the task id and phase there, so when the worker
dies the owner reads exactly which task, which item and which phase it was in -- without a
syscall per task on the hot path. The supervisor reads the same slot to enforce timeouts.
Field writes are ordered so that a reader that sees a non-idle phase also sees that task's
id, start and deadline (the phase is stored last, and reset to idle first).
"""

from __future__ import annotations

import enum
import mmap
import os
import socket
import struct
import tempfile
from collections.abc import Iterator

HEADER = struct.Struct("<IB")
FUNC_HEAD = struct.Struct("<q")
TASK_HEAD = struct.Struct("<qqBBd")
RESULT_HEAD = struct.Struct("<qBdII")
PID = struct.Struct("<q")
MAX_FRAME = 2**32 - 1


class Kind(enum.IntEnum):
    INIT = 1
    FUNC = 2
    TASK = 3
    QUIT = 4
    READY = 11
    INIT_FAILED = 12
    RESULT = 13


class Mode(enum.IntEnum):
    """How a task's items are applied to its function."""

    APPLY = 0  # items are (args, kwds) pairs: f(*args, **kwds)
    MAP = 1  # items are single arguments: f(x)
    STAR = 2  # items are argument tuples: f(*x)


class Status(enum.IntEnum):
    OK = 0
    ITEMS = 1
    LOAD_FAILED = 2


class Entry(enum.IntEnum):
    """What one item's entry in an ITEMS result holds."""

    VALUE = 0
    PICKLED = 1
    ERROR = 2


class Phase(enum.IntEnum):
    """What a worker is doing, as published in its progress slot."""

    IDLE = 0
    INIT = 1
    LOADING = 2
    RUNNING = 3
    DUMPING = 4


PHASE_WORDS = {
    Phase.IDLE: "idle",
    Phase.INIT: "running the initializer before",
    Phase.LOADING: "unpickling",
    Phase.RUNNING: "running",
    Phase.DUMPING: "pickling the result of",
}


def frame(kind: Kind, payload: bytes = b"", head: bytes = b"") -> bytes:
    return frame_head(kind, len(payload), head) + payload


def frame_head(kind: Kind, payload_size: int, head: bytes = b"") -> bytes:
    """The frame header plus ``head``, for a payload sent as a separate buffer."""
    size = len(head) + payload_size
    if size > MAX_FRAME:
        raise OverflowError(f"a frame of {size} bytes exceeds the 4 GiB limit")
    return HEADER.pack(size, kind) + head


class FrameReader:
    """Accumulates bytes from a stream socket and splits them into frames.

    Small frames are parsed out of one shared buffer. A large frame (a big argument or
    result) is received straight into a buffer of its exact size with ``recv_into`` and
    handed over as is, so its bytes are copied once, by the kernel, instead of three times.
    """

    __slots__ = ("_big", "_big_kind", "_big_view", "_buf", "_got", "_pos", "_ready")

    BIG = 1 << 16

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._ready: list[tuple[int, bytes | bytearray]] = []
        self._big: bytearray | None = None
        self._big_view: memoryview | None = None
        self._big_kind = 0
        self._got = 0

    def fill(self, sock: socket.socket, size: int = 1 << 18) -> bool:
        """Read once from ``sock``; False on end of stream. May raise BlockingIOError."""
        if self._big is None:
            self._start_big()
        if self._big is not None and self._big_view is not None:
            n = sock.recv_into(self._big_view[self._got :])
            if n == 0:
                return False
            self._got += n
            if self._got == len(self._big):
                self._ready.append((self._big_kind, self._big))
                self._big_view.release()
                self._big = self._big_view = None
            return True
        data = sock.recv(size)
        if not data:
            return False
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        return True

    def _start_big(self) -> None:
        """If the next frame is large, move what we have of it into its own buffer."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER.size:
            return
        size, kind = HEADER.unpack_from(buf, pos)
        have = len(buf) - pos - HEADER.size
        if size < self.BIG or have >= size:
            return
        big = bytearray(size)
        big[:have] = buf[pos + HEADER.size :]
        del buf[:]
        self._pos = 0
        self._big, self._big_view, self._big_kind, self._got = big, memoryview(big), kind, have

    def next(self) -> tuple[int, bytes | bytearray] | None:
        """The next complete frame as (kind, payload), or None when more bytes are needed."""
        if self._ready:
            return self._ready.pop(0)
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER.size:
            return None
        size, kind = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + size
        if end > len(buf):
            return None
        payload = bytes(buf[pos + HEADER.size : end])
        self._pos = end
        return kind, payload

    def frames(self) -> Iterator[tuple[int, bytes | bytearray]]:
        while (item := self.next()) is not None:
            yield item


# --- progress slot -----------------------------------------------------------------------

SLOT_SIZE = 64
SLOT_TASK, SLOT_PHASE, SLOT_ITEM, SLOT_STARTED, SLOT_DEADLINE = range(5)


def new_slot_fd() -> int:
    """A file descriptor for one worker's progress slot, zero-filled."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("robustpool-slot", os.MFD_CLOEXEC)
    else:  # macOS: an unlinked temporary file serves the same purpose
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
        os.set_inheritable(fd, False)
    os.ftruncate(fd, SLOT_SIZE)
    return fd


def map_slot(fd: int) -> tuple[mmap.mmap, memoryview]:
    mm = mmap.mmap(fd, SLOT_SIZE)
    return mm, memoryview(mm).cast("q")
