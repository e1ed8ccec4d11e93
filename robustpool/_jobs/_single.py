"""Jobs of one item: ``apply_async``'s AsyncResult and ``submit``'s Future."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Generic, TypeVar

from .. import _forks
from . import run_callback, timeout_error

T = TypeVar("T")


class Outcome:
    """The job side of a result that ends once, with a value or an error (see AsyncResult).

    Set by the engine (``_set``), read by the user's threads; the event orders the two.
    """

    cancellable = False  # every item will be wanted, so an engine may queue ahead

    def __init__(
        self, callback: Callable[[Any], object] | None, error_callback: Callable[[BaseException], object] | None
    ) -> None:
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None
        self._callback = callback
        self._error_callback = error_callback
        self.gen = _forks.generation

    def claim(self) -> bool:
        return True

    def drop(self, index: int, count: int) -> None:
        """Never cancelled, so never dropped."""

    def flush(self) -> None:
        """Waiters were woken when the outcome was set."""

    def _set(self, ok: bool, value: Any) -> None:
        if self.event.is_set():
            return
        self.ok, self.value = ok, value
        if ok and self._callback is not None:
            run_callback(self._callback, value, "callback")
        elif not ok and self._error_callback is not None:
            run_callback(self._error_callback, value, "error_callback")
        self.event.set()


class SingleJob(Outcome):
    """The job of ``apply_async``: its one item."""

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        self._set(True, values[0])

    def fail(self, index: int, exc: BaseException) -> None:
        self._set(False, exc)


class AsyncResult(Generic[T]):
    """The result of ``apply_async``: ``get``, ``wait``, ``ready``, ``successful``, as in
    ``multiprocessing.pool.AsyncResult``. Made by the pool, not by users."""

    def __init__(self, job: Outcome) -> None:
        self._job = job

    def ready(self) -> bool:
        """True once the call has a value or an error."""
        return self._job.event.is_set()

    def successful(self) -> bool:
        """Whether the call succeeded; ValueError while it is not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._job.ok

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready, at most ``timeout`` seconds."""
        job = self._job
        if not job.event.is_set():
            _forks.check(job.gen, "result")
        job.event.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        """The value, or raise the call's error; ``multiprocessing.TimeoutError`` if it is
        not ready within ``timeout`` seconds."""
        job = self._job
        if not job.event.is_set():
            _forks.check(job.gen, "result")  # nobody would ever set it in a forked child
        if not job.event.wait(timeout):
            raise timeout_error()
        if job.ok:
            return job.value  # type: ignore[no-any-return]
        raise job.value


class FutureJob:
    """The job of ``submit``: adapts a ``concurrent.futures.Future``."""

    cancellable = True

    def __init__(self, future: Future[Any]) -> None:
        self.future = future
        self._started = False

    def claim(self) -> bool:
        # Asked exactly when the task is about to be sent to a worker: that is the moment
        # the future starts running, after which it can no longer be cancelled.
        if self._started:
            return True
        self._started = True
        return self.future.set_running_or_notify_cancel()

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

    def flush(self) -> None:
        """The future woke its waiters itself."""


AsyncResult.__module__ = "robustpool"  # as imported by users (see _errors)
