"""The job of ``imap`` / ``imap_unordered``: a lazy feeder and a stream of results.

One object plays three roles, each on its own threads:

* the *feeder* (the consumer's thread, under ``_feed_lock``) reads the input lazily into
  chunks and submits them, keeping at most a window of items ahead of the consumer;
* the *job* (the engine's thread) receives outcomes into an ordered or unordered buffer,
  and wakes consumers once per burst (``flush``);
* the *closer* (any thread) cancels what has not started and keeps the cleanup promise.

Shared state is guarded by ``_cond``; the input iterator belongs to whichever thread holds
``_feed_lock``. Tasks in the engine point here, never at the user's iterator: when the user
drops the iterator it is collected at once and closes this job, even while tasks run.
(Were the tasks to point at the iterator, a dropped iterator would live on, and ``join()``
would go on reading its input, possibly forever.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import _forks
from .._calls import Mode
from .._engine import Chunk, Engine, FuncRef
from .._tracebacks import detach_traceback
from . import Cleanup, run_cleanups, timeout_error

if TYPE_CHECKING:
    from .._progress import Bar

_BYTES_AHEAD = 32 << 20  # about the most input (as the engine holds it) an imap keeps ahead


class StreamJob:
    """The state behind an ``imap``/``imap_unordered`` iterator (see IMapIterator).

    Input is read lazily, in the consumer's thread, keeping at most ``buffersize`` chunks
    ahead of the consumer. An item's error is raised at that item's position (``imap``) or
    when it arrives (``imap_unordered``) and iteration can continue afterwards.

    Closing (``close()``, leaving ``with``, garbage collection, terminating the pool) keeps
    the cleanup promise: every computed result the consumer never received is passed to
    ``cleanup`` exactly once, in the owner; tasks not yet started are cancelled.
    """

    cancellable = True

    def __init__(
        self,
        engine: Engine,
        func: FuncRef,
        mode: Mode,
        iterable: Iterable[Any],
        chunksize: int,
        buffersize: int,
        ordered: bool,
        cleanup: Cleanup | None,
        close_timeout: float,
        task_timeout: float = 0.0,
        bar: Bar | None = None,
    ) -> None:
        self._engine = engine
        self._bar = bar  # counts items as they complete; closed when the stream ends or closes
        self.gen = _forks.generation
        self._task_timeout = task_timeout
        self._func = func
        self._mode = mode
        self._input: Iterator[Any] | None = iter(iterable)
        self._chunksize = chunksize
        self._ahead = buffersize * chunksize
        # Bytes the engine holds per item (rises at once, decays slowly) and the fewest items
        # to keep ahead whatever their size: two chunks per worker.
        self._item_bytes = 0.0
        self._sized = False  # a first chunk was submitted alone, to learn the items' size
        self._min_ahead = 2 * engine.capacity * chunksize
        self._ordered = ordered
        self._cleanup = cleanup
        self._close_timeout = close_timeout
        self._cond = threading.Condition(threading.Lock())
        self._feed_lock = threading.Lock()
        self._by_index: dict[int, tuple[bool, Any]] = {}
        self._arrived: deque[tuple[bool, Any]] = deque()
        self._yielded = 0  # items handed to the consumer
        self._fed = 0  # items read into chunks (plus the input error's slot)
        self._unsent = 0  # of those, items in chunks the feeder has not submitted yet
        self._accounted = 0  # items whose outcome arrived or that were dropped
        self._length: int | None = None  # items in all, once the input ended
        self.closed = False
        self._late: list[Any] = []  # results that arrived after close(), awaiting cleanup
        self._dirty = False  # outcomes arrived since the last flush
        self._closer_waiting = False  # a close() is waiting to clean late results itself
        self._watchers: list[Callable[[], None]] = []  # awaiting coroutines (see _aio)
        # Told of every value handed to the consumer: set by robustpool.testing, which checks
        # that each result is handed over or cleaned, exactly once (None otherwise).
        self.on_handed: Callable[[Any], None] | None = None
        self._hold = engine.hold()  # the engine waits for this job's input (see Hold)
        self.feed()

    # -- feeding (the consumer's thread) --

    @property
    def owes_input(self) -> bool:
        """True while input is left to read (a racy snapshot; ``feed`` decides for real)."""
        return self._input is not None and not self.closed

    def feed(self, everything: bool = False, deadline: float | None = None) -> None:
        """Read more input into chunks: up to the window, or (``everything``) all of it,
        submitting as it goes and stopping at ``deadline`` (a ``time.monotonic()``)."""
        # Refill only once half the window is free: chunks then go out in batches (one
        # wakeup and one write per batch) instead of one syscall pair per consumed item.
        if self._input is None or (not everything and self._fed - self._yielded > self._window() // 2):
            return
        with self._feed_lock:
            try:
                while True:
                    self._feed_locked(everything)
                    if not everything or self._input is None or self.closed:
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        return
            finally:
                if self.closed:
                    self._input = None  # closed while we read: drop it here (see _close)

    def _window(self) -> int:
        """Items to keep ahead of the consumer: ``buffersize`` chunks, fewer when items are
        big, so that about _BYTES_AHEAD of input waits in the owner (the default window of
        64 chunks held 64 MiB of 1 MiB items, allocated afresh in bursts), but never fewer
        than two chunks per worker."""
        if self._item_bytes <= 0.0:
            return self._ahead
        return min(self._ahead, max(self._min_ahead, int(_BYTES_AHEAD / self._item_bytes)))

    def _feed_locked(self, everything: bool) -> None:
        # Reading everything goes in slices of one window, so the caller checks its deadline.
        window = self._window()
        limit = self._fed + window if everything else self._yielded + window
        chunks: list[Chunk] = []
        ended = False  # the input ended in this call: release the hold once its chunks are in
        try:
            while (source := self._input) is not None and not self.closed:
                if self._fed >= limit:
                    return
                items: list[Any] = []
                error: BaseException | None = None
                size = self._chunksize if self._chunksize > 1 else self._engine.batch_size(self._func, self._ahead)
                try:
                    for _ in range(size):
                        items.append(next(source))
                except StopIteration:
                    self._input = None
                except Exception as exc:
                    # Stored, and raised at its position later: without its frames, or they
                    # would keep the consumer's stack (and this iterator) alive meanwhile.
                    detach_traceback(exc, "Traceback of the input iterable's error, in the owner")
                    self._input, error = None, exc
                if items:
                    chunks.append(self._chunk(items))
                    if not self._sized:
                        self._sized = True
                        self._submit(chunks)  # the first chunk alone: learn the items' size
                if error is not None:
                    with self._cond:
                        self._fed += 1
                        self._accounted += 1
                        self._store(self._fed - 1, False, error)
                        self._notify_locked()
                if self._input is None:
                    with self._cond:
                        self._length = self._fed
                        self._notify_locked()
                    ended = True
                elif self._window() < window:
                    return  # the items are big: stop at the smaller window
        finally:
            try:
                self._submit(chunks)
            finally:
                if ended:
                    # Only now: a closed engine with no hold left and nothing queued
                    # finishes, and would refuse the chunks this call still had to submit.
                    self._hold.release()

    def _chunk(self, items: list[Any]) -> Chunk:
        with self._cond:
            start = self._fed
            self._fed += len(items)
            self._unsent += len(items)
        # Items the pool batched are separate tasks to the user: each replies alone and has
        # the whole timeout. A user's chunk replies item by item when results must be
        # cleaned: then a stop mid-chunk loses no finished item.
        batched = self._chunksize == 1
        stream = batched or self._cleanup is not None or self._bar is not None  # a bar moves item by item
        return Chunk(self, self._func, self._mode, start, items, self._task_timeout, True, stream, batched)

    def _submit(self, chunks: list[Chunk]) -> None:
        if not chunks:
            return
        count = sum(len(c.items) for c in chunks)
        with self._cond:
            self._unsent -= count
            if self.closed:
                # Closed while we read: these never reach the engine (close() did not
                # wait for them either). They count as dropped.
                self._accounted += count
                self._notify_locked()
                chunks.clear()
                return
        held = self._engine.submit(chunks)
        chunks.clear()
        if held:
            per_item = held / count
            self._item_bytes = max(per_item, 0.8 * self._item_bytes + 0.2 * per_item)

    def _store(self, index: int, ok: bool, value: Any) -> None:
        if self._ordered:
            self._by_index[index] = (ok, value)
        else:
            self._arrived.append((ok, value))

    # -- the job side (the engine's thread) --

    def claim(self) -> bool:
        return not self.closed

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        with self._cond:
            self._accounted += len(values)
            self._dirty = True
            if self.closed:
                self._late.extend(values)
                # A waiting close() cleans them itself, so it returns only once they are
                # clean and can raise their errors; otherwise we clean them right here.
                mine = not self._closer_waiting
            else:
                mine = False
                for k, v in enumerate(values):
                    self._store(index + k, True, v)
        if mine:
            self._clean_late()
        elif self._bar is not None:
            self._bar.done(len(values))

    def fail(self, index: int, exc: BaseException) -> None:
        with self._cond:
            self._accounted += 1
            self._dirty = True
            counted = not self.closed
            if counted:
                self._store(index, False, exc)
        if counted and self._bar is not None:
            self._bar.failed()

    def drop(self, index: int, count: int) -> None:
        with self._cond:
            self._accounted += count
            self._dirty = True

    def flush(self) -> None:
        with self._cond:
            if self._dirty:
                self._dirty = False
                self._notify_locked()

    def _notify_locked(self) -> None:
        """Wake the threads in next() and the coroutines awaiting news (under ``_cond``)."""
        self._cond.notify_all()
        if self._watchers:
            watchers, self._watchers = self._watchers, []
            for watcher in watchers:
                watcher()  # posts to an event loop (see _aio): no user code, no lock of ours

    def _clean_late(self) -> list[Exception]:
        """Clean results that arrived after close; their errors are logged and returned."""
        with self._cond:
            late, self._late = self._late, []
        if late and self._cleanup is not None:
            return run_cleanups(self._cleanup, late)
        return []

    # -- the consumer's side --

    def next(self, timeout: float | None = None, on_timeout: Callable[[], BaseException] = timeout_error) -> Any:
        _forks.check(self.gen, "imap iterator")
        self.feed()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                got = self._take()
                if got is not None:
                    break
                if self.closed or (self._length is not None and self._yielded >= self._length):
                    self._end_bar()
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise on_timeout()
                self._cond.wait(remaining)
        ok, value = got
        if ok:
            if self.on_handed is not None:
                self.on_handed(value)
            return value
        raise value

    def poll(self) -> tuple[bool, Any] | None:
        """The next outcome as ``(ok, value)`` if one is there, else None, without waiting;
        StopIteration at the end (the asynchronous iterator's step)."""
        _forks.check(self.gen, "imap iterator")
        self.feed()
        with self._cond:
            got = self._take()
            if got is None and (self.closed or (self._length is not None and self._yielded >= self._length)):
                self._end_bar()
                raise StopIteration
        if got is not None and got[0] and self.on_handed is not None:
            self.on_handed(got[1])
        return got

    def _end_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def watch(self, watcher: Callable[[], None]) -> bool:
        """Call ``watcher`` (any thread) at the next news; True, and no call, if poll()
        has something to say already."""
        with self._cond:
            if self._ready_locked():
                return True
            self._watchers.append(watcher)
            return False

    def _ready_locked(self) -> bool:
        if self.closed or (self._length is not None and self._yielded >= self._length):
            return True
        if self._ordered:
            return self._yielded in self._by_index
        return bool(self._arrived)

    def _take(self) -> tuple[bool, Any] | None:
        got = self._by_index.pop(self._yielded, None) if self._ordered else self._arrived.popleft() if self._arrived else None
        if got is not None:
            self._yielded += 1
        return got

    # -- closing (any thread) --

    def close(self) -> None:
        """Stop: cancel unstarted tasks, and clean every computed result never handed out.

        Waits up to ``close_timeout`` seconds for tasks already running; results arriving
        later are cleaned on arrival by the pool. Raises an ExceptionGroup if cleanups
        failed (after running all of them).
        """
        _forks.check(self.gen, "imap iterator")  # its results (and their cleanup) are the owner's
        with self._cond:
            self._closer_waiting = True
        try:
            errors = self.close_now()
            deadline = time.monotonic() + self._close_timeout
            while True:
                errors += self._clean_late()
                with self._cond:
                    if self._late:
                        continue
                    remaining = deadline - time.monotonic()
                    # Chunks a blocked feeder built but has not submitted will never run
                    # (it drops them when it resumes): nothing to wait for there.
                    if self._accounted + self._unsent >= self._fed or self._engine.finished or remaining <= 0:
                        # From here on, late arrivals are cleaned by the engine's thread.
                        self._closer_waiting = False
                        break
                    self._cond.wait(min(remaining, 0.05))
            errors += self._clean_late()
        finally:
            with self._cond:
                self._closer_waiting = False
        if errors:
            raise ExceptionGroup(f"robustpool: cleanup failed for {len(errors)} result(s)", errors)

    def hold_late(self) -> None:
        """Keep late results for ``release_late`` instead of cleaning them on arrival."""
        with self._cond:
            self._closer_waiting = True

    def release_late(self) -> list[Exception]:
        with self._cond:
            self._closer_waiting = False
        return self._clean_late()

    def close_now(self) -> list[Exception]:
        """Close without waiting: clean what is buffered, cancel what has not started.
        Returns the cleanup errors (already logged)."""
        with self._cond:
            if self.closed:
                return []
            self.closed = True
            buffered = [v for ok, v in self._by_index.values() if ok]
            buffered += [v for ok, v in self._arrived if ok]
            self._by_index.clear()
            self._arrived.clear()
            self._notify_locked()
        self._end_bar()
        self._hold.release()
        # The input belongs to the thread feeding from it: drop it only if nobody is in
        # next() on it right now; otherwise that thread drops it when next() returns.
        if self._feed_lock.acquire(blocking=False):
            try:
                self._input = None
            finally:
                self._feed_lock.release()
        self._engine.cancel(self)
        return run_cleanups(self._cleanup, buffered) if self._cleanup else []
