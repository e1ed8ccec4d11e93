"""The owner's handle on one worker: its socket, progress slot, arena, queues and lifecycle state.

Every field belongs to the dispatcher thread (``_loop``); other threads only read ``pid``,
``assigned`` and ``rss`` for statistics, where a value a moment old is fine.
"""

from __future__ import annotations

import contextlib
import enum
import mmap
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _arena
from ._arena import OwnerArena
from ._tasks import Task
from ._wire import TO_OWNER, Framer, FrameReader, map_slot, new_slot_fd

_SOCKET_BUFFER = 4 << 20


class WorkerState(enum.Enum):
    """Where a worker is in its life, as the owner sees it (its exit ends it).

    ACCEPTING: takes new tasks (also while still starting: ``pid`` is None until the
    supervisor says it forked). DRAINING: takes no new task (recycled for
    ``maxtasksperchild`` or ``memory_limit``) and is told to quit once its queue is empty.
    QUITTING: told to quit; an exit with code 0 is then expected.
    """

    ACCEPTING = "accepting"
    DRAINING = "draining"
    QUITTING = "quitting"


@dataclass(eq=False)
class WorkerHandle:
    key: int
    sock: socket.socket
    slot_view: memoryview
    slot_map: mmap.mmap  # the slot and, after it, the arena (one mapping)
    arena: OwnerArena | None = None  # None: big payloads take the socket too
    state: WorkerState = WorkerState.ACCEPTING
    pid: int | None = None
    ready: bool = False  # its initializer finished (READY arrived)
    eof: bool = False  # its socket is closed, or we stopped reading it
    broken: str | None = None  # why we stopped reading it and asked for it to be killed
    init_error: str | None = None
    assigned: int = 0  # tasks given to it
    rss: int | None = None
    inflight: deque[Task] = field(default_factory=deque)  # sent, result not all arrived; oldest first
    funcs: dict[int, None] = field(default_factory=dict)  # mirror of the worker's function cache
    out: deque[memoryview] = field(default_factory=deque)  # frames not yet written
    reader: FrameReader = field(default_factory=lambda: FrameReader(TO_OWNER))
    framer: Framer = field(default_factory=Framer)
    writing: bool = False  # the selector watches it for writing too

    @property
    def accepting(self) -> bool:
        return self.state is WorkerState.ACCEPTING

    def release_slot(self) -> None:
        """Unmap the slot and the arena (the worker is gone: nobody writes them any more)."""
        if self.arena is not None:
            self.arena.close()
        with contextlib.suppress(BufferError, ValueError):
            self.slot_view.release()
            self.slot_map.close()


def open_worker(key: int, ask: Callable[[int, int], None]) -> WorkerHandle:
    """Make a worker's socket pair and progress slot, and ``ask(their_socket_fd, slot_fd)``
    the supervisor to fork a worker on them; our copies of what we handed over are closed.
    Raises OSError (nothing left open) if any step fails."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for end in (mine, theirs):
            # Room for a whole large frame: fewer wake-ups per megabyte (the kernel caps the
            # request at its own limit, so this never fails).
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        size = _arena.file_size()
        slot_fd = new_slot_fd(size)
        try:
            slot_map, view = map_slot(slot_fd, size)
            half = _arena.half_of(size)
            arena = OwnerArena(slot_map, half) if half else None
            try:
                ask(theirs.fileno(), slot_fd)
            except BaseException:
                if arena is not None:
                    arena.close()
                view.release()
                slot_map.close()
                raise
        finally:
            os.close(slot_fd)
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    mine.setblocking(False)
    return WorkerHandle(key, mine, view, slot_map, arena=arena)
