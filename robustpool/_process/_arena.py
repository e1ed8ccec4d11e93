"""Each worker's arena: shared memory that carries large task payloads and results.

Why: over the data socket a 1 MiB argument is copied four times (pickled into a fresh
buffer, into the kernel, out of it into another fresh buffer, then unpickled) and every
fresh megabyte costs a few hundred page faults, as many again on the way back. Through the
arena the owner copies the caller's bytes once, into memory that both processes mapped
when the worker started (its pages faulted once, then reused), and the worker unpickles
straight from there; a result comes back the same way.

Layout. The arena lives in the worker's progress-slot memfd (``_wire.new_slot_fd``), after
the slot's page, so it is made, passed and freed with the slot::

    [0, GRANULE)                     the progress slot (``_wire``)
    [GRANULE, GRANULE + half)        to the worker: task payloads, written by the owner
    [GRANULE + half, GRANULE + 2h)   to the owner: result payloads, written by the worker

``half`` is read from the file's size, so both sides agree without a message; a file of
``SLOT_SIZE`` has no arena (off Linux, where there is no memfd, or when it is disabled).

Who owns what. Each half has one writer, which alone allocates in it (``Regions``), and one
reader, which never writes to it. The writer frees a region once the reader has said it is
done with it, and that is said on the data socket, whose system calls order every
hand-over (so there is no shared counter whose memory ordering could go wrong):

* to the worker: a task's region is freed when the task's first RESULT arrives, since the
  worker unpickles every item of a task before it runs any;
* to the owner: each TASK frame carries how many RESULT_REF payloads the owner has read;
  the worker frees its oldest regions up to that count (frames keep their order).

A writer that finds no room sends the payload on the socket, as without an arena: nothing
ever waits for room. ``OwnerArena`` belongs to the dispatcher thread; in a worker,
``WorkerArena``'s task half to the main thread and its result half to whoever holds the
outbox lock (the flusher thread sends results too).

Deaths. Nothing is named anywhere (no ``/dev/shm`` entry, nothing on disk): the memory goes
with the last mapping of the memfd, the worker's at its death, the supervisor's slot
mapping when it reaps it, the owner's when it settles the worker's exit
(``WorkerHandle.release_slot``); the owner's mapping is not inherited by a process it
forks. A payload in a dead worker's arena is lost with it as one in its socket would be:
the task is settled from the progress slot (failed or retried), and a retry is written into
the arena of the worker that runs it.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import sys
from collections import deque

from ._serialize import Payload, Scattered
from ._wire import REF, SLOT_SIZE, ProtocolError

GRANULE = mmap.ALLOCATIONGRANULARITY  # where the arena starts in the memfd (mmap offsets align to it)
PAGE = mmap.PAGESIZE

# Each half's size. Virtual: a memfd's pages exist only once written, and first-fit
# allocation keeps reusing the lowest ones, so what is resident is what was in flight at
# once (up to KEEP). A payload that does not fit goes on the socket. 0 disables the arena
# (read where a worker's file is made, so a test can set it in the owner).
HALF = (256 << 20) if sys.maxsize > 2**32 and sys.platform.startswith("linux") else 0
# Pages above this offset in a half are given back to the kernel once nothing there is in
# use: a burst of huge payloads does not leave each worker holding their memory.
KEEP = 16 << 20
# The smallest payload that goes through the arena. ``python -m benchmarks.arena``
# (2026-12-03, steady state, 5 runs of 5 repeats): from 64 KiB up the arena was faster in
# every run (1.05-2.2x); at 32 KiB the socket was, in every run (arena 0.71-0.80x); 16 KiB
# and below went either way or favoured the arena slightly, not monotonically, so the line
# is where the gain is steady (it is also where the pickler stops copying large buffers).
MIN_BYTES = 64 << 10


def file_size() -> int:
    """The size of a new worker's slot memfd: its slot, then its arena if enabled."""
    return GRANULE + 2 * HALF if HALF else SLOT_SIZE


def half_of(size: int) -> int:
    """The arena half of a slot memfd of ``size`` bytes (0: it has no arena)."""
    return (size - GRANULE) // 2 if size > GRANULE else 0


class Regions:
    """First-fit allocation of page-aligned regions in ``[0, capacity)``; pure.

    Lowest address first, so the pages in use stay the same few (faulted once, warm).
    ``free`` returns the span above ``keep`` that nothing uses any more, once, for the
    writer to give back to the kernel.
    """

    __slots__ = ("_capacity", "_ends", "_high", "_keep", "_starts")

    def __init__(self, capacity: int, keep: int) -> None:
        self._capacity = capacity
        self._keep = keep
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._high = 0  # end of the pages written since the last give-back

    def __len__(self) -> int:
        return len(self._starts)

    def alloc(self, size: int) -> int | None:
        """The offset of a free region of ``size`` bytes, now in use; None if none fits."""
        need = -(-max(size, 1) // PAGE) * PAGE
        starts, ends = self._starts, self._ends
        at = 0
        for i, start in enumerate(starts):
            if start - at >= need:
                break
            at = ends[i]
        else:
            i = len(starts)
            if self._capacity - at < need:
                return None
        starts.insert(i, at)
        ends.insert(i, at + need)
        self._high = max(self._high, at + need)
        return at

    def free(self, offset: int) -> tuple[int, int] | None:
        """Free the region at ``offset``; returns (start, length) of pages to give back."""
        i = bisect.bisect_left(self._starts, offset)
        if i == len(self._starts) or self._starts[i] != offset:
            raise ValueError(f"no region in use at offset {offset}")
        del self._starts[i], self._ends[i]
        floor = max(self._ends[-1] if self._ends else 0, self._keep)
        if self._high <= floor:
            return None
        span = (floor, self._high - floor)
        self._high = floor
        return span


def _write(view: memoryview, offset: int, payload: Payload) -> None:
    if type(payload) is bytes:
        view[offset : offset + len(payload)] = payload
        return
    assert isinstance(payload, Scattered)
    for part in payload.parts:
        end = offset + len(part)
        view[offset:end] = part
        offset = end


def _give_back(mm: mmap.mmap, base: int, span: tuple[int, int] | None) -> None:
    """Return the pages of ``span`` (offsets in the half at ``base``) to the kernel: for a
    memfd, MADV_REMOVE frees them for every process that maps them."""
    if span is not None and hasattr(mmap, "MADV_REMOVE"):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_REMOVE, base + span[0], span[1])


def _region(view: memoryview, ref: bytes | bytearray | memoryview, at: int) -> memoryview:
    """The payload a REF (at ``at`` in a frame) names in ``view``, checked: bytes from
    elsewhere than the other side's code must not make us read outside the arena."""
    offset, size = REF.unpack_from(ref, at)
    if offset + size > len(view) or offset % PAGE:
        raise ProtocolError(f"an arena reference outside the arena: {size} bytes at {offset}")
    return view[offset : offset + size]


class OwnerArena:
    """The owner's side of one worker's arena (the dispatcher thread's, see the module
    docstring): it writes task payloads and reads results."""

    __slots__ = ("_mm", "_placed", "_regions", "_results", "_tasks", "consumed")

    def __init__(self, mm: mmap.mmap, half: int) -> None:
        self._mm = mm
        self._tasks = memoryview(mm)[GRANULE : GRANULE + half]
        self._results = memoryview(mm)[GRANULE + half : GRANULE + 2 * half]
        self._regions = Regions(half, KEEP)
        self._placed: deque[tuple[int, int]] = deque()  # (task id, offset), in the order sent
        self.consumed = 0  # RESULT_REF payloads read: sent to the worker in every TASK
        if hasattr(mmap, "MADV_DONTFORK"):
            # A process the owner forks (the user's os.fork, a fork-context Pool) would
            # otherwise keep every arena's memory alive for as long as it lives.
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTFORK, GRANULE, 2 * half)

    def place(self, task_id: int, payload: Payload) -> bytes | None:
        """Write a large payload into the worker's half; its REF, or None (small, or no
        room: send it on the socket)."""
        size = len(payload)
        if size < MIN_BYTES:
            return None
        offset = self._regions.alloc(size)
        if offset is None:
            return None
        _write(self._tasks, offset, payload)
        self._placed.append((task_id, offset))
        return REF.pack(offset, size)

    def answered(self, task_id: int) -> None:
        """A result of ``task_id`` arrived: the worker is done with its payload."""
        placed = self._placed
        if placed and placed[0][0] == task_id:
            _, offset = placed.popleft()
            _give_back(self._mm, GRANULE, self._regions.free(offset))

    def result(self, frame: bytes | bytearray, at: int) -> memoryview:
        """The result payload a RESULT_REF frame names (release the view when done)."""
        return _region(self._results, frame, at)

    def in_use(self) -> int:
        """Task payloads in the arena (for tests)."""
        return len(self._regions)

    def close(self) -> None:
        """Release our views of the mapping, so it can be unmapped."""
        self._tasks.release()
        self._results.release()


class WorkerArena:
    """A worker's side of its arena: it reads task payloads and writes results."""

    __slots__ = ("_half", "_mm", "_regions", "_results", "_sent", "_tasks", "freed")

    def __init__(self, mm: mmap.mmap, half: int) -> None:
        self._mm = mm
        self._half = half
        self._tasks = memoryview(mm)[GRANULE : GRANULE + half].toreadonly()
        self._results = memoryview(mm)[GRANULE + half : GRANULE + 2 * half]
        self._regions = Regions(half, KEEP)
        self._sent: deque[int] = deque()  # offsets of the RESULT_REF payloads sent, oldest first
        self.freed = 0  # how many of those are freed (written by the main thread only)

    def task(self, frame: bytes | bytearray, at: int) -> memoryview:
        """The task payload a TASK frame names (release the view when done)."""
        return _region(self._tasks, frame, at)

    def consumed(self, count: int) -> None:
        """The owner has read ``count`` RESULT_REF payloads in all: free their regions."""
        sent = self._sent
        while self.freed < count and sent:
            self.freed += 1
            _give_back(self._mm, GRANULE + self._half, self._regions.free(sent.popleft()))

    def place(self, payload: Payload) -> bytes | None:
        """Write a large result payload into the owner's half; its REF, or None."""
        size = len(payload)
        if size < MIN_BYTES:
            return None
        offset = self._regions.alloc(size)
        if offset is None:
            return None
        _write(self._results, offset, payload)
        self._sent.append(offset)
        return REF.pack(offset, size)
