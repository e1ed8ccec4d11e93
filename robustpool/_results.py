"""Result objects handed to the user, which are also the jobs the dispatcher reports to.

Threads: ``deliver``/``fail``/``drop`` run on the dispatcher thread (or, for items that
cannot even be pickled, on the calling thread); everything else runs on the user's threads.
Each object guards its state with its own lock; user callbacks and cleanups are never run
while that lock is held.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _forks
from ._calls import Mode
from ._process import _serialize as ser
from ._process._tasks import FuncRef, Task, make_tasks

if TYPE_CHECKING:
    from ._process._loop import Dispatcher

T = TypeVar("T")
log = logging.getLogger("robustpool")

_BYTES_AHEAD = 32 << 20  # about the most pickled input an imap keeps ahead of its consumer

Cleanup = Callable[[Any], object]


def _run_callback(fn: Callable[[Any], object], arg: Any, what: str) -> None:
    try:
        fn(arg)
    except BaseException:
        # A callback runs on the dispatcher thread; letting it raise would stop results for
        # everyone. It is logged with its traceback instead.
        log.exception("robustpool: the %s raised; other results are unaffected", what)


def _timeout_error() -> multiprocessing.TimeoutError:
    return multiprocessing.TimeoutError()


class AsyncResult(Generic[T]):
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``."""

    def __init__(
        self,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._event = threading.Event()
        self._ok = False
        self._value: Any = None
        self._callback = callback
        self._error_callback = error_callback
        self._gen = _forks.generation

    # -- job side --
    cancellable = False

    @property
    def cancelled(self) -> bool:
        return False

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        self._set(True, values[0])

    def fail(self, index: int, exc: BaseException) -> None:
        self._set(False, exc)

    def drop(self, index: int, count: int) -> None:
        """Never cancelled, so never dropped."""

    def _set(self, ok: bool, value: Any) -> None:
        if self._event.is_set():
            return
        self._ok, self._value = ok, value
        if ok and self._callback is not None:
            _run_callback(self._callback, value, "callback")
        elif not ok and self._error_callback is not None:
            _run_callback(self._error_callback, value, "error_callback")
        self._event.set()

    # -- user side --
    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._ok

    def wait(self, timeout: float | None = None) -> None:
        if not self._event.is_set():
            _forks.check(self._gen, "result")
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        if not self._event.is_set():
            _forks.check(self._gen, "result")  # nobody would ever set it in a forked child
        if not self._event.wait(timeout):
            raise _timeout_error()
        if self._ok:
            return self._value  # type: ignore[no-any-return]
        raise self._value


class MapResult(AsyncResult[list[T]]):
    """The result of ``map_async``/``starmap_async``: a list once every item is done.

    As in the standard library it waits for every item even after a failure and then
    raises the first error that arrived; with ``cleanup``, every successful value is passed
    to it before the error is raised, since the caller will never see them.
    """

    def __init__(
        self,
        length: int,
        callback: Callable[[list[T]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        cleanup: Cleanup | None = None,
    ) -> None:
        super().__init__(callback, error_callback)
        self._lock = threading.Lock()
        self._values: list[Any] = [None] * length
        self._remaining = length
        self._failed: set[int] = set()
        self._error: BaseException | None = None
        self._cleanup = cleanup
        if length == 0:
            self._set(True, [])

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        with self._lock:
            self._values[index : index + len(values)] = values
            self._remaining -= len(values)
            done = self._remaining == 0
        if done:
            self._finish()

    def fail(self, index: int, exc: BaseException) -> None:
        with self._lock:
            if index in self._failed:
                return
            self._failed.add(index)
            if self._error is None:
                self._error = exc
            self._remaining -= 1
            done = self._remaining == 0
        if done:
            self._finish()

    def _finish(self) -> None:
        if self._error is None:
            self._set(True, self._values)
            return
        if self._cleanup is not None:
            errors = run_cleanups(self._cleanup, (v for i, v in enumerate(self._values) if i not in self._failed))
            if errors:
                self._error.add_note(f"robustpool: {len(errors)} cleanup call(s) also failed; see the log")
        self._values = []
        self._set(False, self._error)


def run_cleanups(cleanup: Cleanup, values: Iterable[Any]) -> list[Exception]:
    """Call ``cleanup`` on every value; a failure never stops the others. Errors are logged
    and returned."""
    errors: list[Exception] = []
    for value in values:
        try:
            cleanup(value)
        except Exception as exc:
            log.error("robustpool: cleanup(%.80r) raised", value, exc_info=exc)
            errors.append(exc)
    return errors


class FutureJob:
    """Adapts a ``concurrent.futures.Future`` to the job interface (for ``submit``)."""

    def __init__(self, future: Future[Any]) -> None:
        self.future = future
        self._started = False

    cancellable = True

    @property
    def cancelled(self) -> bool:
        # Asked exactly when a task is about to be sent to a worker: that is the moment
        # the future starts running, after which it can no longer be cancelled.
        if self._started:
            return False
        self._started = True
        return not self.future.set_running_or_notify_cancel()

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        with contextlib.suppress(InvalidStateError):
            self.future.set_result(values[0])

    def fail(self, index: int, exc: BaseException) -> None:
        try:
            if not self._started:
                self._started = True
                self.future.set_running_or_notify_cancel()
            self.future.set_exception(exc)
        except (InvalidStateError, RuntimeError):
            pass

    def drop(self, index: int, count: int) -> None:
        """The future was cancelled before it ran; nothing more to do."""


class _IMapJob:
    """The state behind an ``imap``/``imap_unordered`` iterator (see IMapIterator).

    Tasks in the dispatcher point here, never at the user's iterator: when the user drops
    the iterator it is collected at once and closes this job, even while tasks are still
    running. (Were the tasks to point at the iterator, a dropped iterator would live on, and
    ``join()`` would go on reading its input, possibly forever.)

    Input is read lazily, in the consumer's thread, keeping at most ``buffersize`` chunks
    ahead of the consumer. An item's error is raised at that item's position (``imap``) or
    when it arrives (``imap_unordered``) and iteration can continue afterwards.

    Closing (``close()``, leaving ``with``, garbage collection, terminating the pool) keeps
    the cleanup promise: every computed result the consumer never received is passed to
    ``cleanup`` exactly once, in the owner; tasks not yet started are cancelled.
    """

    def __init__(
        self,
        engine: Dispatcher,
        func: FuncRef,
        mode: Mode,
        iterable: Iterable[Any],
        chunksize: int,
        buffersize: int,
        ordered: bool,
        cleanup: Cleanup | None,
        close_timeout: float,
        task_timeout: float = 0.0,
    ) -> None:
        self._engine = engine
        self._gen = _forks.generation
        self._task_timeout = task_timeout
        self._func = func
        self._mode = mode
        self._input: Iterator[Any] | None = iter(iterable)
        self._chunksize = chunksize
        self._ahead = buffersize * chunksize
        # Pickled bytes per item (rises at once, decays slowly) and the fewest items to keep
        # ahead whatever their size: two tasks per worker.
        self._item_bytes = 0.0
        self._min_ahead = 2 * engine.settings.processes * chunksize
        self._ordered = ordered
        self._cleanup = cleanup
        self._close_timeout = close_timeout
        self._cond = threading.Condition(threading.Lock())
        self._feed_lock = threading.Lock()
        self._by_index: dict[int, tuple[bool, Any]] = {}
        self._arrived: deque[tuple[bool, Any]] = deque()
        self._yielded = 0
        self._fed = 0  # items submitted (plus the input error's slot)
        self._accounted = 0  # items whose outcome arrived or that were dropped
        self._length: int | None = None
        self._closed = False
        self._late: list[Any] = []  # results that arrived after close(), awaiting cleanup
        self._dirty = False  # a deferred wake-up is queued on the dispatcher
        self._closer_waiting = False  # a close() is waiting to clean late results itself
        self._held = True  # the engine counts this job as still feeding (see _release_hold)
        engine.feeder_opened()
        self._feed()

    # -- feeding (user threads) --

    def _feed(self, everything: bool = False, deadline: float | None = None) -> None:
        """Read more input into tasks: up to the window, or (``everything``) all of it,
        submitting as it goes and stopping at ``deadline`` (a ``time.monotonic()``)."""
        # Refill only once half the window is free: tasks then go out in batches (one
        # wakeup and one write per batch) instead of one syscall pair per consumed item.
        if self._input is None or (not everything and self._fed - self._yielded > self._window() // 2):
            return
        with self._feed_lock:
            try:
                while True:
                    tasks: list[Task] = []
                    try:
                        self._feed_locked(tasks, everything)
                    finally:
                        if tasks:
                            self._engine.submit(tasks)
                    if not everything or self._input is None or self._closed:
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        return
            finally:
                if self._closed:
                    self._input = None  # closed while we read: drop it here (see _close)

    def _window(self) -> int:
        """Items to keep ahead of the consumer: ``buffersize`` chunks, fewer when items are
        big, so that about _BYTES_AHEAD of pickled input waits in the owner (the default
        window of 64 chunks held 64 MiB of 1 MiB items, allocated afresh in bursts), but
        never fewer than two tasks per worker."""
        if self._item_bytes <= 0.0:
            return self._ahead
        return min(self._ahead, max(self._min_ahead, int(_BYTES_AHEAD / self._item_bytes)))

    def _feed_locked(self, tasks: list[Task], everything: bool) -> None:
        # Reading everything goes in slices of one window, so the caller checks its deadline.
        window = self._window()
        limit = self._fed + window if everything else self._yielded + window
        while (source := self._input) is not None and not self._closed:
            if self._fed >= limit:
                return
            chunk: list[Any] = []
            error: BaseException | None = None
            size = self._chunksize if self._chunksize > 1 else self._engine.batch_hint(self._ahead, self._func.func_id)
            try:
                for _ in range(size):
                    chunk.append(next(source))
            except StopIteration:
                self._input = None
            except Exception as exc:
                # Stored, and raised at its position later: without its frames, or they
                # would keep the consumer's stack (and this iterator) alive meanwhile.
                ser.detach_traceback(exc, "Traceback of the input iterable's error, in the owner")
                self._input, error = None, exc
            start = self._fed
            if chunk:
                with self._cond:
                    self._fed += len(chunk)
                # Items the pool batched are separate tasks to the user: each replies alone
                # and has the whole timeout. A user's chunk replies item by item when
                # results must be cleaned: then a stop mid-chunk loses no finished item.
                batched = self._chunksize == 1
                stream = batched or self._cleanup is not None
                made = make_tasks(
                    self, self._func, self._mode, start, chunk, self._task_timeout, stream=stream, item_deadline=batched
                )
                tasks.extend(made)
                per_item = sum(len(t.payload) for t in made) / len(chunk)
                self._item_bytes = max(per_item, 0.8 * self._item_bytes + 0.2 * per_item)
            if error is not None:
                with self._cond:
                    self._fed += 1
                    self._accounted += 1
                    self._store(self._fed - 1, False, error)
            if self._input is None:
                with self._cond:
                    self._length = self._fed
                    self._cond.notify_all()
                self._release_hold()
            elif self._window() < window:
                return  # the items are big: stop at the smaller window

    def _release_hold(self) -> None:
        """Tell the engine this job reads no more input (once, whoever gets here first:
        the feeding thread at the input's end, or close() on any thread)."""
        with self._cond:
            held, self._held = self._held, False
        if held:
            self._engine.feeder_closed()

    def _store(self, index: int, ok: bool, value: Any) -> None:
        if self._ordered:
            self._by_index[index] = (ok, value)
        else:
            self._arrived.append((ok, value))

    # -- job side (dispatcher thread) --

    cancellable = True

    @property
    def cancelled(self) -> bool:
        return self._closed

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        with self._cond:
            self._accounted += len(values)
            if self._closed:
                self._late.extend(values)
                # A waiting close() cleans them itself, so it returns only once they are
                # clean and can raise their errors; otherwise we clean them right here.
                mine = not self._closer_waiting
            else:
                mine = False
                for k, v in enumerate(values):
                    self._store(index + k, True, v)
            self._notify()
        if mine:
            self._clean_late()

    def fail(self, index: int, exc: BaseException) -> None:
        with self._cond:
            self._accounted += 1
            if not self._closed:
                self._store(index, False, exc)
            self._notify()

    def drop(self, index: int, count: int) -> None:
        with self._cond:
            self._accounted += count
            self._notify()

    def _notify(self) -> None:
        """Wake waiting consumers (called with the lock held).

        On the dispatcher thread the wake-up is deferred to the end of its step, so a
        burst of results costs the consumer one wake-up instead of one per result; from
        any other thread it happens at once.
        """
        if threading.get_ident() == self._engine.thread_id:
            if not self._dirty:
                self._dirty = True
                self._engine.defer_wake(self)
        else:
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._dirty = False
            self._cond.notify_all()

    def _clean_late(self) -> list[Exception]:
        """Clean results that arrived after close; their errors are logged and returned."""
        with self._cond:
            late, self._late = self._late, []
        if late and self._cleanup is not None:
            return run_cleanups(self._cleanup, late)
        return []

    # -- user side --

    def next(self, timeout: float | None = None) -> Any:
        _forks.check(self._gen, "imap iterator")
        self._feed()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                got = self._take()
                if got is not None:
                    break
                if self._closed or (self._length is not None and self._yielded >= self._length):
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _timeout_error()
                self._cond.wait(remaining)
        ok, value = got
        if ok:
            return value
        raise value

    def _take(self) -> tuple[bool, Any] | None:
        got = self._by_index.pop(self._yielded, None) if self._ordered else self._arrived.popleft() if self._arrived else None
        if got is not None:
            self._yielded += 1
        return got

    def close(self) -> None:
        """Stop: cancel unstarted tasks, and clean every computed result never handed out.

        Waits up to ``close_timeout`` seconds for tasks already running; results arriving
        later are cleaned on arrival by the pool. Raises an ExceptionGroup if cleanups
        failed (after running all of them).
        """
        _forks.check(self._gen, "imap iterator")  # its results (and their cleanup) are the owner's
        with self._cond:
            self._closer_waiting = True
        try:
            errors = self._close()
            deadline = time.monotonic() + self._close_timeout
            while True:
                errors += self._clean_late()
                with self._cond:
                    if self._late:
                        continue
                    remaining = deadline - time.monotonic()
                    if self._accounted >= self._fed or self._engine.finished or remaining <= 0:
                        # From here on, late arrivals are cleaned by the dispatcher.
                        self._closer_waiting = False
                        break
                    self._cond.wait(min(remaining, 0.05))
            errors += self._clean_late()
        finally:
            with self._cond:
                self._closer_waiting = False
        if errors:
            raise ExceptionGroup(f"robustpool: cleanup failed for {len(errors)} result(s)", errors)

    def _hold_late(self) -> None:
        """Keep late results for ``_release_late`` instead of cleaning them on arrival."""
        with self._cond:
            self._closer_waiting = True

    def _release_late(self) -> list[Exception]:
        with self._cond:
            self._closer_waiting = False
        return self._clean_late()

    def _close(self) -> list[Exception]:
        with self._cond:
            if self._closed:
                return []
            self._closed = True
            buffered = [v for ok, v in self._by_index.values() if ok]
            buffered += [v for ok, v in self._arrived if ok]
            self._by_index.clear()
            self._arrived.clear()
            self._cond.notify_all()
        self._release_hold()
        # The input belongs to the thread feeding from it: drop it only if nobody is in
        # next() on it right now; otherwise that thread drops it when next() returns.
        if self._feed_lock.acquire(blocking=False):
            try:
                self._input = None
            finally:
                self._feed_lock.release()
        self._engine.cancel(self)
        return run_cleanups(self._cleanup, buffered) if self._cleanup else []


class IMapIterator(Generic[T]):
    """The iterator returned by ``imap``/``imap_unordered``.

    Input is read lazily, in the consumer's thread, keeping at most ``buffersize`` chunks
    ahead of the consumer. An item's error is raised at that item's position (``imap``) or
    when it arrives (``imap_unordered``) and iteration can continue afterwards;
    ``next(timeout)`` raises ``multiprocessing.TimeoutError``.

    Closing (``close()``, leaving ``with``, garbage collection, terminating the pool) keeps
    the cleanup promise: every computed result the consumer never received is passed to
    ``cleanup`` exactly once, in the owner; tasks not yet started are cancelled.
    """

    def __init__(self, job: _IMapJob) -> None:
        self._job = job

    def __iter__(self) -> IMapIterator[T]:
        return self

    def __next__(self) -> T:
        # `self` is dropped first: an item's exception keeps this frame in its traceback,
        # and a caller that stores the exception must not keep the iterator alive by it.
        job = self._job
        del self
        return job.next()  # type: ignore[no-any-return]

    def next(self, timeout: float | None = None) -> T:
        """Return the next result, raising an item's exception at its position."""
        job = self._job
        del self
        return job.next(timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Cancel unstarted tasks and clean every computed result never handed out.

        Waits up to the pool's ``close_timeout`` for tasks already running; results that
        arrive later are cleaned on arrival. Raises an ExceptionGroup if cleanups failed,
        after running all of them.
        """
        self._job.close()

    def __enter__(self) -> IMapIterator[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._job.close()

    def __del__(self) -> None:
        job = getattr(self, "_job", None)
        if job is not None and not job._closed and job._gen == _forks.generation:
            with contextlib.suppress(BaseException):
                job._close()


for _cls in (
    AsyncResult,
    MapResult,
    IMapIterator,
):
    _cls.__module__ = "robustpool"  # as imported by users (see _errors)
