"""Jobs of one item: ``apply_async``'s AsyncResult and ``submit``'s Future."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import _base as futures_base
from typing import Any, Generic, TypeVar

from .. import _forks
from .._engine import Capability, Engine
from . import run_callback, timeout_error

T = TypeVar("T")


class Outcome:
    """The job side of a result that ends once, with a value or an error (see AsyncResult).

    Set by the engine (``_set``), read by the user's threads. The job is its own one-shot
    event (``is_set``/``wait``): ``_done`` is a lock held from birth until the outcome is
    set, and a waiter takes it and gives it back at once, so every waiter passes once it is
    set. A ``threading.Event`` would build a Condition, a deque and bound methods, objects
    the cyclic collector tracks for every pending call; a separate event object would be
    one more.
    """

    cancellable = False  # every item will be wanted, so an engine may queue ahead
    # Slots: one call's job is one object for the cyclic collector, not two (with a dict).
    __slots__ = (
        "_callback", "_done", "_ended", "_engine", "_error_callback", "_flag", "_watch_lock", "_watchers", "gen", "ok", "value",
    )  # fmt: skip

    def __init__(
        self,
        callback: Callable[[Any], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        engine: Engine | None = None,
    ) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._flag = False  # True once set: waiters pass without touching _done
        self.ok = False
        self.value: Any = None
        self._callback = callback
        self._error_callback = error_callback
        self._engine = engine  # what runs it, to stop it when an awaiting task is cancelled
        self.gen = _forks.generation
        self._watch_lock = threading.Lock()  # guards _ended and _watchers
        self._ended = False
        self._watchers: list[Callable[[], None]] | None = None  # awaiting coroutines (see _aio)

    def claim(self) -> bool:
        # False once ended: a call stopped (stop()) before its chunks reached a worker.
        return not self._ended

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        raise NotImplementedError  # each kind of outcome says how its items add up

    def fail(self, index: int, exc: BaseException) -> None:
        raise NotImplementedError

    def drop(self, index: int, count: int) -> None:
        """Never cancelled, so never dropped."""

    def flush(self) -> None:
        """Waiters were woken when the outcome was set."""

    def _set(self, ok: bool, value: Any) -> bool:
        """End with this outcome, unless ended already; False if it was."""
        callback = self._callback if ok else self._error_callback
        with self._watch_lock:
            if self._ended:
                return False
            self._ended = True
            self.ok, self.value = ok, value
            if callback is None:  # the common case: ended and woken under one acquisition
                watchers = self._wake()
        if callback is not None:
            # Callbacks run before waiters wake, as in the standard library, and outside the lock.
            run_callback(callback, value, "callback" if ok else "error_callback")
            with self._watch_lock:
                watchers = self._wake()
        for watcher in watchers or ():
            watcher()
        return True

    def _wake(self) -> list[Callable[[], None]] | None:
        """Called under _watch_lock: mark set, let waiters pass; returns the watchers to call."""
        self._flag = True
        self._done.release()
        watchers, self._watchers = self._watchers, None
        return watchers

    def watch(self, watcher: Callable[[], None]) -> bool:
        """Call ``watcher`` (any thread) once the outcome is set; True, and no call, if it is."""
        with self._watch_lock:
            if self._flag:
                return True
            if self._watchers is None:
                self._watchers = []
            self._watchers.append(watcher)
            return False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set, at most ``timeout`` seconds; whether it is set."""
        if self._flag:
            return True
        if self._done.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._done.release()
            return True
        return self._flag

    def stop(self) -> None:
        """The awaiting task was cancelled: end as cancelled, and stop the work."""
        if self._set(False, CancelledError()) and self._engine is not None:
            self._engine.kill(self)


class SingleJob(Outcome):
    """The job of ``apply_async``: its one item."""

    __slots__ = ()

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        self._set(True, values[0])

    def fail(self, index: int, exc: BaseException) -> None:
        self._set(False, exc)


class AsyncResult(Generic[T]):
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``, as in
    ``multiprocessing.pool.AsyncResult``. Made by the pool, not by users.

    Beyond the standard library: ``await result`` gives the value (or raises the call's error)
    without blocking the event loop, and cancelling the awaiting task stops the call (its worker
    is killed if it runs, and replaced). In a process forked from the pool's owner, ``get`` and
    ``wait`` on a result not ready raise ``RuntimeError`` instead of waiting forever.
    """

    __slots__ = ("__weakref__", "_job")

    def __init__(self, job: Outcome) -> None:
        self._job = job

    def ready(self) -> bool:
        """Whether the call is over: True once it has a value or an error, else False. Never blocks."""
        return self._job.is_set()

    def successful(self) -> bool:
        """Whether the call succeeded (True) or failed (False).

        :returns: True if ``get()`` will return a value, False if it will raise.
        :raises ValueError: the call is not ready yet, as in the standard library.
        """
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._job.ok

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the call is ready, or until ``timeout`` passes; returns None either way.

        :param timeout: seconds to wait at most; default None: as long as it takes.
        :raises RuntimeError: the call is not ready and this is a process forked from the owner.
        """
        job = self._job
        if not job.is_set():
            _forks.check(job.gen, "result")
        job.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        """Wait for the call and return its value, or raise its error.

        :param timeout: seconds to wait at most; default None: as long as it takes.
        :returns: the call's value (for a ``MapResult``, the list of results in input order).
        :raises multiprocessing.TimeoutError: the call is not ready within ``timeout`` seconds,
            as in the standard library; the call goes on, and ``get`` may be called again.
        :raises Exception: the call's error: the task's own exception, rebuilt with the worker's
            frames, or ``WorkerLostError``, ``TaskTimeoutError``,
            ``TaskSerializationError``, ``RemoteTaskError``,
            ``PoolTerminatedError``, ``InitializerError``, ``WorkerStartError``
            (``concurrent.futures.CancelledError`` after a cancelled ``await``).
        :raises RuntimeError: the call is not ready and this is a process forked from the owner.
        """
        job = self._job
        if not job.is_set():
            _forks.check(job.gen, "result")  # nobody would ever set it in a forked child
        if not job.wait(timeout):
            raise timeout_error()
        if job.ok:
            return job.value  # type: ignore[no-any-return]
        raise job.value

    def __await__(self) -> Generator[Any, None, T]:
        """``await result``: the value, or the call's error, without blocking the event loop.

        Cancelling the awaiting task stops the call: its worker is killed if it is running
        (and replaced), and the result ends with ``concurrent.futures.CancelledError``.
        """
        job = self._job
        if not job.is_set():
            _forks.check(job.gen, "result")
            from . import _aio  # here: a loop runs, so asyncio is loaded; `import robustpool` stays lean

            try:
                yield from _aio.waiting(job.watch)
            except _aio.CancelledError:
                job.stop()
                raise
        return self.get(0)


class _FutureLock:
    """The ``_condition`` of a RobustFuture: what ``concurrent.futures`` uses of a
    ``threading.Condition`` (``with``, ``acquire``/``release``, ``wait``, ``notify_all``)
    as one object over one lock.

    A ``threading.Condition`` builds an RLock, a deque and five bound methods, objects the
    cyclic collector tracks for every pending future; this is one (its RLock is not
    tracked). Reentrant, as ``concurrent.futures.wait`` needs: it asks each future
    ``cancelled()`` while it holds all their locks.
    """

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiters: list[threading.Lock] | None = None  # made by the first wait()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Called with the lock held: release it until notified or ``timeout`` passes."""
        waiter = threading.Lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        held = self._lock._release_save()  # type: ignore[attr-defined]  # all levels, as Condition does
        woken = False
        try:
            woken = waiter.acquire(True, -1 if timeout is None else max(0.0, timeout))
            return woken
        finally:
            self._lock._acquire_restore(held)  # type: ignore[attr-defined]
            # Timed out: forget the waiter, unless a notify_all took the list meanwhile (it
            # may be gone, or be a later wait's list without this waiter).
            if not woken and self._waiters:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def notify_all(self) -> None:
        """Called with the lock held: wake every waiter."""
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            waiter.release()


# The fields Future.__init__ sets in every Python we support; another Python's own
# __init__ runs instead (and builds a Condition that is dropped at once).
_FUTURE_FIELDS_KNOWN = set(vars(Future())) == {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}


class RobustFuture(Future[T]):
    """A ``concurrent.futures.Future`` whose ``cancel()`` also stops a running call.

    What ``submit`` returns, on every pool and executor; made by them, not by users. Every
    method of ``concurrent.futures.Future`` works as usual (``result``, ``exception``,
    ``done``, ``add_done_callback``, ``concurrent.futures.wait``, ``as_completed``).

    Pending: cancelled as usual (and dropped from the engine's queue at once). Running, on
    an engine that can stop running work: its worker is killed (process tree) and replaced,
    the future ends cancelled, and nothing else is disturbed. The standard library's
    ``cancel()`` does nothing to a running future; ours does, on purpose. ``await future``
    works too, and cancelling the awaiting task cancels the future.
    """

    # Its job, weakly: the job holds the future, and a cycle would leave every finished call
    # to the cyclic collector. While the call is queued or runs, the engine holds the job.
    _job: weakref.ref[FutureJob] | None = None

    def __init__(self) -> None:
        if _FUTURE_FIELDS_KNOWN:  # the base class's fields, without building its Condition
            self._state = futures_base.PENDING
            self._result = None
            self._exception = None
            self._waiters = []
            self._done_callbacks: list[Callable[[Future[T]], object]] = []
        else:
            super().__init__()
        self._condition = _FutureLock()  # type: ignore[assignment]  # see _FutureLock

    def cancel(self) -> bool:
        """Cancel the call, even while it runs on a process pool or executor.

        Unlike ``concurrent.futures.Future.cancel``, which fails on a running future, this kills
        the worker running the call (with its subprocesses) and replaces it; nothing else is
        disturbed. A pending call is dropped from the queue at once. Either way the future ends
        cancelled, its waiters (``wait``, ``as_completed``) wake and its done callbacks run. On a
        thread pool a running call cannot be stopped, and this returns False, as in the standard
        library.

        :returns: True if the future is cancelled (now or before), False if it has finished, or
            runs where it cannot be stopped.
        """
        return self._cancel(running=True)

    def _cancel(self, running: bool) -> bool:
        ref = self._job
        job = ref() if ref is not None else None
        # The base class's cancel, extended to RUNNING, and notifying waiters at once:
        # as_completed() and wait() learn of a cancel only through their waiters, which the
        # base class tells only when the executor reaches the future. We may never reach it
        # (its chunk is dropped), so we tell them here. This uses the base class's state
        # fields, the same in every Python we support.
        stoppable = running and job is not None and job.stoppable
        with self._condition:
            state = self._state
            if state in (futures_base.CANCELLED, futures_base.CANCELLED_AND_NOTIFIED):
                return True
            if state == futures_base.FINISHED or (state == futures_base.RUNNING and not stoppable):
                return False
            self._state = futures_base.CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        if job is not None:
            job.stop()
        return True

    def __await__(self) -> Generator[Any, None, T]:
        from . import _aio  # (see AsyncResult.__await__)

        if not self.done():
            try:
                yield from _aio.waiting(self._watch)
            except _aio.CancelledError:
                self.cancel()
                raise
        if self.cancelled():
            raise _aio.CancelledError
        return self.result()

    def _watch(self, watcher: Callable[..., None]) -> bool:
        self.add_done_callback(watcher)  # called with the future: the watcher ignores it
        return False


class FutureJob:
    """The job of ``submit``: adapts a RobustFuture (or any ``concurrent.futures.Future``)."""

    cancellable = True
    __slots__ = ("__weakref__", "_engine", "_started", "future")

    def __init__(self, future: Future[Any], engine: Engine | None = None) -> None:
        self.future = future
        self._started = False
        self._engine = engine
        if isinstance(future, RobustFuture):
            future._job = weakref.ref(self)

    @property
    def stoppable(self) -> bool:
        """Whether a running call can be stopped (its engine can kill running work)."""
        return self._engine is not None and bool(self._engine.capabilities & Capability.STOP_RUNNING)

    def stop(self) -> None:
        """The future was cancelled: drop the call, or stop it if it runs."""
        engine = self._engine
        if engine is None:
            return
        if self._started:
            engine.kill(self)
        else:
            engine.cancel(self)

    def claim(self) -> bool:
        # Asked exactly when the task is about to be sent to a worker: that is the moment
        # the future starts running. A future cancelled meanwhile is dropped.
        if self._started:
            return True
        self._started = True
        try:
            return self.future.set_running_or_notify_cancel()
        except RuntimeError:  # cancelled (and its waiters told) by RobustFuture.cancel
            return False

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        try:  # noqa: SIM105 - not contextlib.suppress: an object per call, on every future's path
            self.future.set_result(values[0])
        except InvalidStateError:  # cancelled meanwhile, or a late value after terminate()
            pass

    def fail(self, index: int, exc: BaseException) -> None:
        try:
            if not self._started:
                self._started = True
                if not self.future.set_running_or_notify_cancel():
                    return
            self.future.set_exception(exc)
        except (InvalidStateError, RuntimeError):
            pass

    def drop(self, index: int, count: int) -> None:
        """Dropped before it ran: cancelled by its future, or by the engine (a shutdown
        with ``cancel_futures``); the future ends cancelled and its waiters wake."""
        future = self.future
        if isinstance(future, RobustFuture):
            future._cancel(running=False)
        elif future.cancel():
            with contextlib.suppress(RuntimeError):
                future.set_running_or_notify_cancel()

    def flush(self) -> None:
        """The future woke its waiters itself."""


AsyncResult.__module__ = "robustpool"  # as imported by users (see _errors)
RobustFuture.__module__ = "robustpool"
