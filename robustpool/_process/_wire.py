"""The data plane's wire format: frames on each worker's pipe, and the worker's progress slot.

Each worker has one duplex stream socket to the owner. Both directions carry frames::

    [u8 magic][u8 kind][u16 sequence number][u32 payload length][payload]

    owner -> worker   INIT   pickled (initializer, initargs), or empty     (always first)
                      FUNC   [i64 func_id] pickled callable                 (once per worker)
                      TASK   [i64 task_id][i64 func_id][u8 mode][u8 flags][f64 timeout]
                             [u64 arena results consumed]
                             pickled items, or with ``flags & ARENA`` [u64 offset][u64 length]
                             of the pickled items in the worker's arena
                      QUIT   empty: finish and exit 0
    worker -> owner   READY       [i64 pid]
                      INIT_FAILED encoded exception
                      RESULT      [i64 task_id][u8 status][f64 seconds spent]
                                  [u32 first item][u32 item count] payload
                      RESULT_REF  the same head, then [u64 offset][u64 length] of the
                                  payload in the worker's arena

Every frame is checked on arrival, byte by byte as the header comes in (so a stray byte is
caught at once, not after the silence that follows it): the magic byte, a kind the receiver
expects, the sequence number, and the least payload that kind carries (each direction counts its frames from 0,
modulo 2**16). A task can write into, or read from, the descriptors its worker inherited;
without the checks a stray byte would shift every later frame, and a bogus length would make
the reader wait for (or allocate) gigabytes. Any mismatch raises :class:`ProtocolError`: the
owner then kills that worker and its task fails; a worker exits.

A RESULT covers items ``first .. first+count-1`` of its task. A task's results come in one
RESULT, except for a *stream* task (``flags & STREAM``: items the owner batched on its own
for an ``imap`` with chunksize 1, or a chunk whose job cleans unwanted results), whose
outcomes are sent in as many RESULTs as needed so that none waits behind a slow neighbour and
finished items can be handed over (or cleaned) even if a later item never ends. With
``flags & ITEM_DEADLINE`` each item gets the whole timeout (they are separate tasks to the
user); otherwise the timeout covers the task. A result too large for one frame is sent item
by item; one item too large fails alone. The payload depends on the status: OK, a pickled
list of the values (builtin data only, or a single item); ITEMS, a pickled list of
``(Entry, data)``, one per item, where data is a builtin scalar (VALUE), the item's value
pickled alone (PICKLED) or an encoded exception (ERROR); FAILED, one encoded exception that
fails every item from ``first`` on.

Large payloads (a task's pickled items, a result's payload: ``_arena.MIN_BYTES`` or more)
travel through the worker's arena, shared memory both processes mapped once, when it has
room; the frame then carries where they are (see ``_arena`` for who writes and frees what,
and how the frames themselves order every hand-over).

The progress slot is a small shared-memory page per worker (an mmap of a memfd), written by
the worker and read by the owner and the supervisor. It replaces acknowledgement frames:
before touching a task the worker stores the task id and phase there, so when the worker
dies the owner reads exactly which task, which item and which phase it was in -- without a
syscall per task on the hot path. The supervisor reads the same slot to enforce timeouts.
Field writes are ordered so that a reader that sees a non-idle phase also sees that task's
id, start and deadline (the phase is stored last, and reset to idle first). A finished task
stays in the slot as REPLYING until its result is handed to the socket: a worker that dies
then (its socket broken by the task, a result too large, a kill from outside mid-send) is
blamed on that task like any other death, so nothing is re-queued forever. A worker whose
own loop fails writes why into the slot's fault fields before it exits.
"""

from __future__ import annotations

import contextlib
import enum
import mmap
import os
import socket
import struct
import sys
from collections.abc import Iterator

from .._calls import Mode as Mode  # the worker reads a task's mode from its header

HEADER = struct.Struct("<BBHI")
FUNC_HEAD = struct.Struct("<q")
TASK_HEAD = struct.Struct("<qqBBdQ")
RESULT_HEAD = struct.Struct("<qBdII")
PID = struct.Struct("<q")
REF = struct.Struct("<QQ")  # a payload in the arena: offset in its half, length
MAGIC = 0xA7
_SEQ_MASK = 0xFFFF
# The largest payload one frame carries (its length field is a u32). Read at each use, not
# bound at import, so a test can lower it in a worker through the pool's initializer.
MAX_FRAME = 2**32 - 1

# Unpickled functions a worker keeps; the owner mirrors the cache to know which functions a
# worker has (so both sides must use this one number).
FUNC_CACHE = 128

# TASK flags
STREAM = 1  # reply item by item (see the module docstring)
ITEM_DEADLINE = 2  # each item has the whole timeout
ARENA = 4  # the pickled items are in the worker's arena (the payload is a REF)


class Kind(enum.IntEnum):
    INIT = 1
    FUNC = 2
    TASK = 3
    QUIT = 4
    READY = 11
    INIT_FAILED = 12
    RESULT = 13
    RESULT_REF = 14


class Status(enum.IntEnum):
    OK = 0
    ITEMS = 1
    FAILED = 2


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
    REPLYING = 5  # the task finished; its result is not yet handed to the socket


# Phases in which the worker is working on the task in its slot (IDLE, INIT: on none).
BUSY = frozenset({Phase.LOADING, Phase.RUNNING, Phase.DUMPING, Phase.REPLYING})

PHASE_WORDS = {
    Phase.IDLE: "idle",
    Phase.INIT: "running the initializer before",
    Phase.LOADING: "unpickling",
    Phase.RUNNING: "running",
    Phase.DUMPING: "pickling the result of",
    Phase.REPLYING: "sending the result of",
}


class Fault(enum.IntEnum):
    """Why a worker's own loop gave up, as it writes in its slot before exiting."""

    NONE = 0
    SEND = 1  # sending to the owner failed (errno in SLOT_ERRNO)
    RECEIVE = 2  # reading from the owner failed (errno in SLOT_ERRNO)
    PROTOCOL = 3  # the owner's bytes were not frames
    LOOP = 4  # any other error in the worker loop (its traceback is on stderr)


# Exit code of a worker whose loop failed (EX_SOFTWARE): the slot's fault fields say why.
EXIT_LOOP_FAILED = 70

# What each side may receive: kind -> the least payload it carries.
TO_WORKER = {Kind.INIT: 0, Kind.FUNC: FUNC_HEAD.size, Kind.TASK: TASK_HEAD.size, Kind.QUIT: 0}
TO_OWNER = {
    Kind.READY: PID.size,
    Kind.INIT_FAILED: 1,
    Kind.RESULT: RESULT_HEAD.size,
    Kind.RESULT_REF: RESULT_HEAD.size + REF.size,
}


class ProtocolError(Exception):
    """Bytes on a data socket that are not the frame the protocol expects there."""


class FrameTooLarge(OverflowError):
    """A payload larger than one frame can carry."""


class Framer:
    """Builds the frames one side sends on one socket, numbering them in order.

    Not thread-safe: whoever builds frames for a socket must also queue them in the order
    they were built (the worker does both under one lock).
    """

    __slots__ = ("_seq",)

    def __init__(self) -> None:
        self._seq = 0

    def head(self, kind: Kind, payload_size: int, head: bytes = b"") -> bytes:
        """The frame header plus ``head``, for a payload sent as a separate buffer."""
        size = len(head) + payload_size
        if size > MAX_FRAME:
            raise FrameTooLarge(f"a frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
        seq = self._seq
        self._seq = (seq + 1) & _SEQ_MASK
        return HEADER.pack(MAGIC, kind, seq, size) + head

    def frame(self, kind: Kind, payload: bytes = b"", head: bytes = b"") -> bytes:
        return self.head(kind, len(payload), head) + payload


class FrameReader:
    """Accumulates bytes from a stream socket and splits them into frames.

    Small frames are parsed out of one shared buffer. A large frame (a big argument or
    result) is received straight into a buffer of its exact size with ``recv_into`` and
    handed over as is, so its bytes are copied once, by the kernel, instead of three times.
    """

    __slots__ = ("_accepts", "_big", "_big_kind", "_big_view", "_buf", "_got", "_pos", "_ready", "_seq")

    BIG = 1 << 16

    def __init__(self, accepts: dict[Kind, int]) -> None:
        self._accepts = accepts
        self._seq = 0
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

    def _header(self, buf: bytearray, pos: int) -> tuple[int, int]:
        """(size, kind) of the frame header at ``pos``, checked; the sequence advances only
        once the frame is taken (see ``_take_seq``)."""
        magic, kind, seq, size = HEADER.unpack_from(buf, pos)
        if magic != MAGIC or seq != self._seq:
            raise ProtocolError(f"bad frame header {bytes(buf[pos : pos + HEADER.size]).hex()} (expected frame #{self._seq})")
        least = self._accepts.get(kind)
        if least is None or size < least:
            raise ProtocolError(f"unexpected frame: kind {kind}, {size} bytes")
        return size, kind

    def _check_partial(self, buf: bytearray, pos: int) -> None:
        """Check what has arrived of a header: magic, then kind, then sequence number."""
        have = len(buf) - pos
        if have >= 1 and buf[pos] != MAGIC:
            raise ProtocolError(f"bad frame header starting {bytes(buf[pos : pos + HEADER.size]).hex()}")
        if have >= 2 and buf[pos + 1] not in self._accepts:
            raise ProtocolError(f"unexpected frame kind {buf[pos + 1]}")
        if have >= 4 and int.from_bytes(buf[pos + 2 : pos + 4], "little") != self._seq:
            raise ProtocolError(f"frame #{int.from_bytes(buf[pos + 2 : pos + 4], 'little')}, expected #{self._seq}")

    def _take_seq(self) -> None:
        self._seq = (self._seq + 1) & _SEQ_MASK

    def _start_big(self) -> None:
        """If the next frame is large, move what we have of it into its own buffer."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER.size:
            return
        size, kind = self._header(buf, pos)
        have = len(buf) - pos - HEADER.size
        if size < self.BIG or have >= size:
            return
        self._take_seq()
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
            self._check_partial(buf, pos)
            return None
        size, kind = self._header(buf, pos)
        end = pos + HEADER.size + size
        if end > len(buf):
            return None
        payload = bytes(buf[pos + HEADER.size : end])
        self._pos = end
        self._take_seq()
        return kind, payload

    def frames(self) -> Iterator[tuple[int, bytes | bytearray]]:
        while (item := self.next()) is not None:
            yield item


# --- progress slot -----------------------------------------------------------------------

SLOT_SIZE = 64
SLOT_TASK, SLOT_PHASE, SLOT_ITEM, SLOT_STARTED, SLOT_DEADLINE, SLOT_FAULT, SLOT_ERRNO = range(7)


def new_slot_fd(size: int = SLOT_SIZE) -> int:
    """A file descriptor for one worker's progress slot, zero-filled, of ``size`` bytes
    (more than SLOT_SIZE: its arena follows, see ``_arena``; only with memfd)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(_SLOT_NAME, os.MFD_CLOEXEC)
    else:  # macOS: an unlinked temporary file serves the same purpose
        import tempfile  # here: a worker and a supervisor never need it, and it costs ~3 ms to import

        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
        os.set_inheritable(fd, False)
        size = SLOT_SIZE
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


_SLOT_NAME = "robustpool-slot"


def map_slot(fd: int, size: int = SLOT_SIZE) -> tuple[mmap.mmap, memoryview]:
    """Map a slot (the supervisor's), or with ``size`` the slot and its arena (the owner's)."""
    mm = mmap.mmap(fd, size)
    return mm, memoryview(mm)[:SLOT_SIZE].cast("q")


def map_slot_untracked(fd: int, size: int = SLOT_SIZE) -> tuple[mmap.mmap, memoryview]:
    """Map a slot (and the arena after it: ``size`` is the file's) for a worker, leaving
    no descriptor of it behind (the caller closes ``fd``). An mmap object keeps a duplicate
    of its file's descriptor; in a worker, a task writing into the descriptors it inherited
    would write into the slot through it, and a scribbled slot can make a death look like
    an idle one. The returned mapping must never be closed (on 3.11/3.12 its descriptor
    number is closed under it): keep it for life."""
    if sys.version_info >= (3, 13):
        mm = mmap.mmap(fd, size, trackfd=False)
    else:
        mm = mmap.mmap(fd, size)
    # Before 3.13 the mapping holds a duplicate; close it, and any other slot descriptor
    # this process may have inherited (Linux names memfds in /proc/self/fd).
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if int(name) != fd and os.readlink(f"/proc/self/fd/{name}").startswith(f"/memfd:{_SLOT_NAME}"):
                    os.close(int(name))
    return mm, memoryview(mm)[:SLOT_SIZE].cast("q")
