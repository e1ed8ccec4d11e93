"""Scopes: work started through a scope is waited for when the scope ends, and its failures
are raised together.

``pool.scope()`` on every facade, and ``multi_scope(pool_a, pool_b, ...)`` over several
pools of any kind (process or thread pools, executors), each keeping its own parallelism:
one pool per resource (one thread for a spinning disk, sixteen for an SSD, a process pool
for the CPU), and one scope that waits for all of them::

    with multi_scope(disk, ssd) as (d, s):
        for path in paths:
            d.submit(read_slowly, path)
        s.submit(index, "/ssd")
    # here every task is done; failures were raised as one ExceptionGroup

The state of one scope (``_State``) is shared by its handles (``Scope``, one per pool) and
guarded by its condition; futures report to it from the engines' threads (done callbacks).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, final

from ._config import check_callable
from ._jobs._single import RobustFuture
from ._jobs._stream import StreamJob

if TYPE_CHECKING:
    from ._executor import ExecutorBase
    from ._pool import PoolBase

log = logging.getLogger("robustpool")

R = TypeVar("R")
P = ParamSpec("P")
OnError = Literal["wait", "stop"]
_POLL = 0.1  # waits are sliced, so Ctrl-C in the owner is seen while tasks run


class _State:
    """One scope: its outstanding futures, open iterators, failures, and whether it ended."""

    def __init__(self, on_error: OnError) -> None:
        if on_error not in ("wait", "stop"):
            raise ValueError(f"on_error must be 'wait' or 'stop', not {on_error!r}")
        self.stop_running = on_error == "stop"
        self.cond = threading.Condition(threading.Lock())
        self.outstanding: set[RobustFuture[Any]] = set()  # what the pools' submit() returned
        self.streams: list[StreamJob] = []  # the iterators opened in the scope, closed at its end
        self.failures: list[BaseException] = []
        self.failed = False  # a task failed (or the body raised): nothing more starts
        self.ended = False  # the scope was left: no more work through its handles

    def settled(self, future: Future[Any]) -> None:
        """A future of the scope ended (on an engine's thread, or at once if it had)."""
        exc = None if future.cancelled() else future.exception()
        first = False
        with self.cond:
            self.outstanding.discard(future)
            if exc is not None:
                self.failures.append(exc)
                first = not self.failed
                self.failed = True
            self.cond.notify_all()
        if first:
            self.cancel(stop=self.stop_running)

    def cancel(self, stop: bool) -> None:
        """Cancel every future not started; with ``stop``, stop the running ones too (where
        the pool can: a thread cannot be stopped, and is waited for)."""
        with self.cond:
            self.failed = True
            pending = list(self.outstanding)
        for future in pending:
            future._cancel(running=stop)  # running=False: only those not started

    def wait(self) -> None:
        """Until no future of the scope is outstanding (tasks may add more meanwhile)."""
        with self.cond:
            while self.outstanding:
                self.cond.wait(_POLL)

    def close_streams(self, now: bool) -> list[Exception]:
        """Close the scope's iterators: ``now`` without waiting for their running items
        (those are cleaned when they arrive). Returns the cleanup errors."""
        errors: list[Exception] = []
        with self.cond:
            streams, self.streams = self.streams, []
        for job in streams:
            if now:
                errors += job.close_now()
                continue
            try:
                job.close()
            except ExceptionGroup as group:
                errors += group.exceptions
        return errors


@final
class Scope:
    """A scope's handle on one pool: what is started through it belongs to the scope.

    Yielded by ``pool.scope()`` and ``multi_scope(...)``; made by them, not by users. The work
    runs on the handle's pool, with that pool's parallelism and limits; the scope waits for it
    when it ends and raises its failures together. Thread-safe: tasks running on a thread pool
    may start more work through the handle they were given. After the scope ended, starting
    work raises RuntimeError; after a task of the scope failed, ``submit`` returns a future
    already cancelled (nothing more starts).
    """

    def __init__(self, state: _State, pool: PoolBase | ExecutorBase) -> None:
        self._state = state
        self._pool = pool

    @property
    def pool(self) -> PoolBase | ExecutorBase:
        """The pool or executor this handle starts work on (work started on it directly is not the scope's)."""
        return self._pool

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """``pool.submit(fn, *args, **kwargs)``, waited for when the scope ends.

        Its failure is one of those the scope raises at its end (and, with the scope's
        ``on_error``, cancels or stops the scope's other tasks).

        :param fn: the callable to run (positional only).
        :param args: positional arguments for ``fn``.
        :param kwargs: keyword arguments for ``fn``.
        :returns: the pool's future (a ``RobustFuture``); once a task of the scope has
            failed, a ``concurrent.futures.Future`` already cancelled instead, and nothing runs.
        :raises RuntimeError: the scope has ended.
        :raises TypeError: ``fn`` is not callable.
        :raises ValueError: the pool is not running (and what else the pool's ``submit`` raises).
        """
        check_callable(fn, "fn")
        state = self._state
        with state.cond:
            if state.ended:
                raise RuntimeError("this scope has ended: start work in a scope that is open")
            if state.failed:
                refused: Future[R] = Future()
                refused.cancel()
                refused.set_running_or_notify_cancel()
                return refused
            future = self._pool.submit(fn, *args, **kwargs)
            state.outstanding.add(future)
        future.add_done_callback(state.settled)  # outside the lock: it runs at once if done
        return future

    def imap(
        self, fn: Callable[[Any], R], iterable: Iterable[Any], chunksize: int = 1, *, cleanup: Callable[[R], object] | None = None
    ) -> Iterator[R]:
        """A lazy ordered stream of ``fn`` over ``iterable`` (the pool's ``imap``, or the
        executor's ``map``), closed when the scope ends: results nobody took go to
        ``cleanup``.

        Unlike ``submit``, an item's error is raised where it is consumed, not at the scope's
        end; the scope's end closes the stream (waiting up to the pool's ``close_timeout``), and
        a cleanup that raised is among the failures it raises.

        :param fn: called as ``fn(item)``.
        :param iterable: any iterable, read lazily.
        :param chunksize: items sent to a worker together; default 1.
        :param cleanup: called as ``cleanup(result)`` in the owner, exactly once, for every
            computed result the consumer never received; default None.
        :returns: the pool's ``IMapIterator``, or the executor's ``MapIterator``.
        :raises RuntimeError: the scope has ended.
        :raises ValueError: as the pool's ``imap`` or the executor's ``map``.
        :raises TypeError: as the pool's ``imap`` or the executor's ``map``.
        """
        from ._pool import PoolBase

        state = self._state
        with state.cond:
            if state.ended:
                raise RuntimeError("this scope has ended: start work in a scope that is open")
            pool = self._pool
            it: Iterator[R]
            if isinstance(pool, PoolBase):
                it = pool.imap(fn, iterable, chunksize, cleanup=cleanup)
            else:
                it = pool.map(fn, iterable, chunksize=chunksize, cleanup=cleanup)
            state.streams.append(it._job)  # IMapIterator and MapIterator keep their StreamJob
        return it

    def map(
        self, fn: Callable[[Any], R], iterable: Iterable[Any], chunksize: int = 1, *, cleanup: Callable[[R], object] | None = None
    ) -> list[R]:
        """``list(self.imap(...))``: every result, in order; the first error is raised.

        :param fn: called as ``fn(item)``.
        :param iterable: the items, read lazily as by ``imap``.
        :param chunksize: items sent to a worker together; default 1.
        :param cleanup: as on ``imap``; default None.
        :returns: the results, in the order of the input.
        :raises Exception: the first item's error, in input order (the stream stops there, and
            the results computed past it go to ``cleanup``).
        :raises RuntimeError: the scope has ended.
        """
        return list(self.imap(fn, iterable, chunksize, cleanup=cleanup))


@contextlib.contextmanager
def multi_scope(*pools: PoolBase | ExecutorBase, on_error: OnError = "wait") -> Iterator[tuple[Scope, ...]]:
    """One scope over several pools: yields one ``Scope`` handle per pool, in order.

    Leaving it waits for every task started through its handles (including tasks they
    start), then closes the iterators opened through them (cleaning what nobody took). If
    a task fails, or the body raises, the tasks not yet started are cancelled, and the
    running ones are waited for (``on_error="wait"``, the default) or stopped
    (``on_error="stop"``: a process pool kills their workers; a thread cannot be stopped,
    so a thread pool's are waited for); then every failure (the body's exception too) is
    raised in one ExceptionGroup. A KeyboardInterrupt or SystemExit in the owner is never
    wrapped or swallowed: the scope cancels and stops what it can, closes its iterators
    without waiting, and lets it propagate at once.

    Nothing like it is in the standard library: its closest kin are ``asyncio.TaskGroup`` (the
    failures as one group) and leaving an executor's ``with`` (the waiting), here across pools
    of any kind, each keeping its own parallelism:

        with multi_scope(disk, ssd) as (d, s):
            for path in paths:
                d.submit(read_slowly, path)
            s.submit(index, "/ssd")
        # here every task is done; failures were raised as one ExceptionGroup

    :param pools: one or more robustpool pools or executors (process or thread), in the order
        of the handles yielded.
    :param on_error: ``"wait"`` (the default) or ``"stop"``, as above.
    :returns: a context manager yielding a tuple of one ``Scope`` per pool, in order.
    :raises ExceptionGroup: on leaving, every failure: the body's exception first, then the
        tasks' errors, then the cleanup errors (a ``BaseExceptionGroup`` if a task raised a
        ``BaseException`` such as ``SystemExit``).
    :raises TypeError: no pool was given, or something that is not a robustpool pool or
        executor (on entering).
    :raises ValueError: ``on_error`` is neither ``"wait"`` nor ``"stop"`` (on entering).
    """
    if not pools:
        raise TypeError("multi_scope needs at least one pool")
    for pool in pools:
        if not callable(getattr(pool, "submit", None)) or not callable(getattr(pool, "scope", None)):
            raise TypeError(f"multi_scope takes robustpool pools and executors, not {type(pool).__name__}")
    state = _State(on_error)
    handles = tuple(Scope(state, pool) for pool in pools)
    body_error: Exception | None = None
    try:
        yield handles
    except Exception as exc:
        body_error = exc
        state.cancel(stop=state.stop_running)
    except BaseException:
        _abandon(state)
        raise
    try:
        state.wait()
    except BaseException:  # Ctrl-C while waiting for the tasks
        _abandon(state)
        raise
    with state.cond:
        state.ended = True
    cleanup_errors = state.close_streams(now=False)
    with state.cond:
        failures = list(state.failures)
    if body_error is not None:
        failures.insert(0, body_error)
    failures += cleanup_errors
    if failures:
        # An ExceptionGroup, unless a task's own error was a BaseException (SystemExit in it).
        raise BaseExceptionGroup(f"robustpool: {len(failures)} failure(s) in a scope", failures)


def _abandon(state: _State) -> None:
    """The owner is interrupted: end the scope now, stopping what can be stopped."""
    with state.cond:
        state.ended = True
    state.cancel(stop=True)
    for err in state.close_streams(now=True):
        log.error("robustpool: a cleanup failed while a scope was interrupted", exc_info=err)


@contextlib.contextmanager
def single_scope(pool: PoolBase | ExecutorBase, on_error: OnError) -> Iterator[Scope]:
    """``pool.scope()``: ``multi_scope`` over one pool, yielding its one handle."""
    with multi_scope(pool, on_error=on_error) as (handle,):
        yield handle


Scope.__module__ = "robustpool"  # as imported by users (see _errors)
multi_scope.__module__ = "robustpool"
