"""RobustPool: the ``multiprocessing.Pool`` API over an engine (supervised processes today).

This module is only the facade: it validates arguments at the call, turns each call into a
job and its chunks, and hands them to the engine through ``robustpool._engine``'s protocol;
the lifecycle it shares with other facades lives in ``_core.PoolCore``. It holds no worker
state and serializes nothing.

Deliberate differences from ``multiprocessing.Pool`` (all documented in the README):

* leaving ``with`` normally waits for outstanding work (close + join); leaving it by an
  exception terminates, after cleaning what the live ``imap`` iterators hold;
* ``imap``/``imap_unordered`` read their input lazily, a bounded window ahead of the
  consumer, instead of all at once;
* ``terminate()`` fails outstanding results with PoolTerminatedError instead of leaving
  them waiting forever.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, cast

from . import _forks, _zygote
from ._calls import Mode, function_name
from ._config import PoolConfig, check_callable, positive_int, task_limit
from ._core import PoolCore, State, check_engine, start_engine
from ._engine import Capability, Engine, EngineSpec
from ._jobs._gather import GatherJob, MapResult
from ._jobs._iterators import IMapIterator
from ._jobs._single import AsyncResult, RobustFuture, SingleJob
from ._progress import ProgressArg, length_of, make_bar
from ._scope import OnError, Scope, single_scope
from ._stats import PoolStats

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")
P = ParamSpec("P")


class PoolBase:
    """The ``multiprocessing.Pool`` API over an engine: everything of ``RobustPool`` and
    ``RobustThreadPool`` but how they build their engine (their ``__init__``)."""

    _config: PoolConfig
    _core: PoolCore

    @property
    def _engine(self) -> Engine:
        # Read through the core, the one owner of the pool's engine: robustpool.testing puts
        # its chaos engine in front of it while a chaos run is on.
        return self._core.engine

    # -- helpers --

    def _timeout(self, task_timeout: float | None) -> float:
        """A call's own task_timeout, or the pool's."""
        if task_timeout is None:
            return self._config.task_timeout
        limit = task_limit("task_timeout", task_timeout)
        if limit and not self._engine.capabilities & Capability.KILL_ON_TIMEOUT:
            raise ValueError("task_timeout needs workers that are processes; this pool's engine cannot enforce it")
        return limit

    # -- apply --

    def apply(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        *,
        task_timeout: float | None = None,
    ) -> T:
        """Run ``func(*args, **kwds)`` in a worker and return its result, blocking until it is done.

        The task's own exception is re-raised as its own type, with the worker's frames in its
        traceback (``multiprocessing.Pool`` chains a ``RemoteTraceback`` instead); ``SystemExit``
        and ``KeyboardInterrupt`` raised in the task are that task's error too.

        :param func: the callable to run; on a process pool lambdas and closures work (cloudpickle).
        :param args: positional arguments for ``func``; default ``()``.
        :param kwds: keyword arguments for ``func``; default None (none).
        :param task_timeout: seconds this call may run before its worker is killed, overriding the
            pool's ``task_timeout``; default None: the pool's. ``math.inf`` means no limit for this
            call; otherwise it must be > 0 and at most 10^9. Only a process pool can enforce a limit.
        :returns: what ``func`` returned.
        :raises WorkerLostError: the worker died while it had the task (a signal, the OOM killer,
            ``os._exit``), after ``retries + 1`` deaths; the worker was replaced and the pool goes on.
        :raises TaskTimeoutError: the task ran past its ``task_timeout``; its worker was killed.
        :raises TaskSerializationError: the function, an argument or the result could not be pickled
            or unpickled (also an instance of the original error's type, e.g. ``TypeError``).
        :raises RemoteTaskError: the task raised an exception that cannot be rebuilt in the owner.
        :raises PoolTerminatedError: the pool was terminated before the task finished.
        :raises InitializerError: the pool is broken: its ``initializer`` failed three times in a row.
        :raises WorkerStartError: the pool is broken: no worker could be started.
        :raises ValueError: the pool is closed or terminated (``"Pool not running"``), or
            ``task_timeout`` is out of range or given to a thread pool.
        :raises TypeError: ``func`` is not callable, or ``task_timeout`` is not a number.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        return self.apply_async(func, args, kwds, task_timeout=task_timeout).get()

    def apply_async(
        self,
        func: Callable[..., T],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] | None = None,
        callback: Callable[[T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        task_timeout: float | None = None,
    ) -> AsyncResult[T]:
        """Start ``func(*args, **kwds)`` in a worker and return at once with an AsyncResult.

        :param func: the callable to run (see ``apply``).
        :param args: positional arguments for ``func``; default ``()``.
        :param kwds: keyword arguments for ``func``; default None (none).
        :param callback: called as ``callback(result)`` in the owner when the call succeeds, on the
            pool's result thread, before ``get()`` returns (as in the standard library); keep it short,
            it delays other results. An exception it raises is logged on the ``robustpool`` logger
            and affects no result. Default None.
        :param error_callback: called as ``error_callback(exc)`` when the call fails, likewise.
            Default None.
        :param task_timeout: seconds this call may run, overriding the pool's; default None: the
            pool's (see ``apply``). Every ``*map*`` method takes it too; ``submit`` cannot, since its
            keyword arguments belong to ``fn``.
        :returns: an ``AsyncResult``; its ``get()`` raises the errors listed on ``apply``. It
            can also be awaited.
        :raises ValueError: the pool is not running, or ``task_timeout`` is out of range or given
            to a thread pool.
        :raises TypeError: ``func`` is not callable, or ``task_timeout`` is not a number.
        :raises InitializerError: the pool is broken and has already stopped (until then, the
            result fails with it); likewise ``WorkerStartError``.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        self._core.check_running()
        check_callable(func)
        timeout = self._timeout(task_timeout)
        job = SingleJob(callback, error_callback, self._engine)
        item = (args if type(args) is tuple else tuple(args), dict(kwds) if kwds else {})
        self._core.start(job, func, Mode.APPLY, (item,), 1, False, timeout)
        return AsyncResult(job)

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> RobustFuture[R]:
        """Start ``fn(*args, **kwargs)`` in a worker; returns a ``concurrent.futures.Future``.

        Not in ``multiprocessing.Pool``: this is the executor's ``submit`` on a pool, so futures,
        ``concurrent.futures.wait`` and ``as_completed`` work with it. The call has the pool's
        ``task_timeout``. Unlike the standard library's futures, its ``cancel()`` stops the call
        even while it runs on a process pool (its worker is killed and replaced), and it can be
        awaited.

        :param fn: the callable to run (positional only).
        :param args: positional arguments for ``fn``.
        :param kwargs: keyword arguments for ``fn``.
        :returns: a ``RobustFuture``; its ``result()`` raises the errors listed on ``apply``.
        :raises ValueError: the pool is closed or terminated (``"Pool not running"``).
        :raises TypeError: ``fn`` is not callable.
        :raises InitializerError: the pool is broken and has already stopped (until then, the
            future fails with it); likewise ``WorkerStartError``.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        self._core.check_running()
        check_callable(fn, "fn")
        return self._core.submit(fn, args, kwargs, self._config.task_timeout)

    # -- map --

    def _default_chunksize(self, n: int) -> int:
        chunksize, extra = divmod(n, self._config.processes * 4)
        return max(1, chunksize + (1 if extra else 0))

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: Mode,
        chunksize: int | None,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        cleanup: Callable[[Any], object] | None,
        task_timeout: float | None,
        progress: ProgressArg = None,
    ) -> MapResult[Any]:
        self._core.check_running()
        check_callable(func)
        timeout = self._timeout(task_timeout)
        if cleanup is not None:
            check_callable(cleanup, "cleanup")
        # A list, tuple or range is sliced as it is: materializing it first cost more than
        # the whole dispatch (3.7 ms for range(200_000)), and a range's chunks travel as
        # ranges. Chunks are sliced off (copied) before this call returns.
        exact = type(iterable) in (list, tuple, range)
        items: Sequence[Any] = cast(Sequence[Any], iterable) if exact else list(iterable)
        size = self._default_chunksize(len(items)) if chunksize is None else positive_int("chunksize", chunksize)
        bar = make_bar(progress, len(items), function_name(func))
        job = GatherJob(len(items), callback, error_callback, cleanup, self._engine, bar)
        if items:
            # With a cleanup, chunks reply item by item, so terminating mid-chunk still
            # hands back (and cleans) the items that finished; with a bar, so it moves by items.
            stream = (cleanup is not None or bar is not None) and size > 1
            self._core.start(job, func, mode, items, size, True, timeout, stream=stream)
        return MapResult(job)

    def map(
        self,
        func: Callable[[S], R],
        iterable: Iterable[S],
        chunksize: int | None = None,
        *,
        cleanup: Callable[[R], object] | None = None,
        task_timeout: float | None = None,
        progress: ProgressArg = None,
    ) -> list[R]:
        """Apply ``func`` to every item of ``iterable``; returns the list of results, in order.

        A list, tuple or range is used as it is; any other iterable is read into a list at the
        call, as in the standard library (``imap`` reads lazily). As in the standard library the
        call waits for every item even after a failure, then raises the first error that arrived.
        Unlike it, an exception raised inside a chunk fails only that item, not the whole chunk.

        :param func: called as ``func(item)``.
        :param iterable: the items; a list, tuple or range is used as it is, anything else is
            read into a list at the call.
        :param chunksize: items sent to a worker together; default None: ``len / (4 * processes)``,
            rounded up, as in ``multiprocessing.Pool``. Must be 1 or more.
        :param cleanup: called as ``cleanup(result)`` in the owner, once, for every successful
            result the caller will never see: the other items' results when the call fails, and
            results that arrive after the call was ended (``terminate()``, a cancelled ``await``).
            Errors it raises are logged and noted on the error raised. Default None.
        :param task_timeout: seconds each task may run, overriding the pool's; default None: the
            pool's (see ``apply``).
        :param progress: a tqdm bar (``tqdm.auto``), here and on every call of many items, counting
            the items as they complete, with failures in its postfix: True, a dict of tqdm options
            (``total`` among them, for an input without a length), or a bar of your own (updated,
            not closed). Default None: no bar. Needs tqdm (``pip install 'robustpool[progress]'``).
        :returns: the results, in the order of the input.
        :raises Exception: the first item error that arrived: any of those listed on ``apply``.
        :raises ValueError: the pool is not running, ``chunksize`` is below 1, or ``task_timeout``
            is out of range or given to a thread pool.
        :raises TypeError: ``func`` or ``cleanup`` is not callable, a parameter has the wrong type,
            or ``progress`` is not True, a dict or a bar.
        :raises ImportError: ``progress`` asks for a bar and tqdm is not installed.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        return self._map_async(func, iterable, Mode.MAP, chunksize, None, None, cleanup, task_timeout, progress).get()

    def map_async(
        self,
        func: Callable[[S], R],
        iterable: Iterable[S],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        cleanup: Callable[[R], object] | None = None,
        task_timeout: float | None = None,
        progress: ProgressArg = None,
    ) -> MapResult[R]:
        """Like ``map``, but returns a MapResult at once instead of waiting.

        :param func: called as ``func(item)``.
        :param iterable: the items (a list, tuple or range as it is; anything else is read into a
            list at the call).
        :param chunksize: items sent to a worker together; default None: as ``map``.
        :param callback: called as ``callback(results)`` with the list when every item succeeded,
            on the pool's result thread; an exception it raises is logged. Default None.
        :param error_callback: called as ``error_callback(exc)`` with the first error, once every
            item is done; likewise. Default None.
        :param cleanup: as on ``map``; default None.
        :param task_timeout: seconds each task may run, overriding the pool's; default None: the
            pool's.
        :param progress: a tqdm bar, as on ``map``; default None.
        :returns: a ``MapResult``, whose ``get()`` returns the list or raises the first error.
            It can also be awaited; cancelling the awaiting task stops the running items.
        :raises ValueError: as ``map``, at the call.
        :raises TypeError: as ``map``, at the call.
        :raises ImportError: ``progress`` asks for a bar and tqdm is not installed.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        return self._map_async(func, iterable, Mode.MAP, chunksize, callback, error_callback, cleanup, task_timeout, progress)

    def starmap(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        cleanup: Callable[[R], object] | None = None,
        task_timeout: float | None = None,
        progress: ProgressArg = None,
    ) -> list[R]:
        """Like ``map``, but each item is unpacked as the arguments: ``func(*item)``.

        :param func: called as ``func(*item)``.
        :param iterable: the items, each an iterable of arguments.
        :param chunksize: items sent to a worker together; default None: as ``map``.
        :param cleanup: as on ``map``; default None.
        :param task_timeout: seconds each task may run, overriding the pool's; default None: the
            pool's.
        :param progress: a tqdm bar, as on ``map``; default None.
        :returns: the results, in the order of the input.
        :raises Exception: the first item error that arrived (see ``apply``).
        :raises ValueError: as ``map``.
        :raises TypeError: as ``map``.
        :raises ImportError: ``progress`` asks for a bar and tqdm is not installed.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        return self._map_async(func, iterable, Mode.STAR, chunksize, None, None, cleanup, task_timeout, progress).get()

    def starmap_async(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        cleanup: Callable[[R], object] | None = None,
        task_timeout: float | None = None,
        progress: ProgressArg = None,
    ) -> MapResult[R]:
        """Like ``starmap``, but returns a MapResult at once instead of waiting.

        :param func: called as ``func(*item)``.
        :param iterable: the items, each an iterable of arguments.
        :param chunksize: items sent to a worker together; default None: as ``map``.
        :param callback: as on ``map_async``; default None.
        :param error_callback: as on ``map_async``; default None.
        :param cleanup: as on ``map``; default None.
        :param task_timeout: seconds each task may run, overriding the pool's; default None: the
            pool's.
        :param progress: a tqdm bar, as on ``map``; default None.
        :returns: a ``MapResult`` (see ``map_async``).
        :raises ValueError: as ``map``, at the call.
        :raises TypeError: as ``map``, at the call.
        :raises ImportError: ``progress`` asks for a bar and tqdm is not installed.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        return self._map_async(func, iterable, Mode.STAR, chunksize, callback, error_callback, cleanup, task_timeout, progress)

    # -- imap --

    def _imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int,
        ordered: bool,
        cleanup: Callable[[Any], object] | None,
        buffersize: int | None,
        task_timeout: float | None,
        progress: ProgressArg,
    ) -> IMapIterator[Any]:
        self._core.check_running()
        check_callable(func)
        timeout = self._timeout(task_timeout)
        positive_int("chunksize", chunksize)
        if cleanup is not None:
            check_callable(cleanup, "cleanup")
        if buffersize is not None:
            positive_int("buffersize", buffersize)
        config = self._config
        window = buffersize or config.buffersize
        it, _ = self._core.stream(
            func,
            Mode.MAP,
            iterable,
            chunksize,
            window,
            ordered,
            cleanup,
            config.close_timeout,
            timeout,
            progress,
            length_of(iterable),
        )
        return it

    def imap(
        self,
        func: Callable[[S], R],
        iterable: Iterable[S],
        chunksize: int = 1,
        *,
        cleanup: Callable[[R], object] | None = None,
        buffersize: int | None = None,
        task_timeout: float | None = None,
        progress: ProgressArg = None,
    ) -> IMapIterator[R]:
        """Lazily apply ``func`` to every item of ``iterable``; iterate the results in input order.

        Unlike ``multiprocessing.Pool.imap``, which reads its whole input at once, the input is
        read lazily, in the consumer's thread, a bounded window ahead of the consumer, so an
        endless generator works; ``join()`` after ``close()`` reads what is left of it. An item's
        exception is raised at that item's position and iteration can go on after it. An
        exception raised by the input itself is raised at its position, after the items read
        before it (which still run).

        :param func: called as ``func(item)``.
        :param iterable: any iterable, read lazily.
        :param chunksize: items sent to a worker together; default 1 (the pool may then batch
            small, fast items itself; each stays a task of its own, with its own timeout and
            error). An exception fails only its item, not its chunk.
        :param cleanup: called as ``cleanup(result)`` in the owner, exactly once, for every
            computed result the consumer never received: after an early ``break``, an exception,
            ``close()``, leaving ``with``, garbage collection of the iterator, or ``terminate()``.
            Default None.
        :param buffersize: chunks to keep ahead of the consumer; default None: the pool's
            ``buffersize``. Fewer are kept when the items' pickles pass about 32 MiB in all.
        :param task_timeout: seconds each task may run, overriding the pool's; default None: the
            pool's (see ``apply``).
        :param progress: a tqdm bar, as on ``map``; default None.
        :returns: an ``IMapIterator``; it is also an async iterator and a context manager.
        :raises TaskSerializationError: ``func`` cannot be pickled (at the call, here).
        :raises ValueError: the pool is not running, ``chunksize`` or ``buffersize`` is below 1,
            or ``task_timeout`` is out of range or given to a thread pool.
        :raises TypeError: ``func`` or ``cleanup`` is not callable, a parameter has the wrong type,
            or ``progress`` is not True, a dict or a bar.
        :raises ImportError: ``progress`` asks for a bar and tqdm is not installed.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        return self._imap(func, iterable, chunksize, True, cleanup, buffersize, task_timeout, progress)

    def imap_unordered(
        self,
        func: Callable[[S], R],
        iterable: Iterable[S],
        chunksize: int = 1,
        *,
        cleanup: Callable[[R], object] | None = None,
        buffersize: int | None = None,
        task_timeout: float | None = None,
        progress: ProgressArg = None,
    ) -> IMapIterator[R]:
        """Like ``imap``, but results come in the order they finish, not in input order.

        An item's exception is raised when it arrives; iteration can go on after it. The input
        is read lazily, and ``cleanup`` keeps the same promise as on ``imap``.

        :param func: called as ``func(item)``.
        :param iterable: any iterable, read lazily.
        :param chunksize: items sent to a worker together; default 1 (see ``imap``).
        :param cleanup: as on ``imap``; default None.
        :param buffersize: chunks to keep ahead of the consumer; default None: the pool's.
        :param task_timeout: seconds each task may run, overriding the pool's; default None: the
            pool's.
        :param progress: a tqdm bar, as on ``map``; default None.
        :returns: an ``IMapIterator``.
        :raises TaskSerializationError: ``func`` cannot be pickled (at the call).
        :raises ValueError: as ``imap``.
        :raises TypeError: as ``imap``.
        :raises ImportError: ``progress`` asks for a bar and tqdm is not installed.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        return self._imap(func, iterable, chunksize, False, cleanup, buffersize, task_timeout, progress)

    # -- lifecycle --

    def close(self) -> None:
        """Accept no new work; the workers exit once everything submitted is done.

        Does not wait: call ``join()`` for that. Calling it again, or after ``terminate()``, does
        nothing. New work then raises ``ValueError("Pool not running")``.

        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        self._core.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the workers to exit after ``close()`` or ``terminate()``.

        After ``close()`` it first reads what the live ``imap`` iterators still owe of their input
        (the standard library's eager ``imap`` would have read it at the call), then waits for the
        outstanding work. An iterator you dropped is closed, not read: close the ones you leave
        early over an endless input. It returns once every worker has sent its last result and
        quit; the kernel's teardown of their processes (slow for forks of a big owner) is not
        waited for: the supervisor reaps them, and this process reaps the supervisor at its next
        pool or at exit, within a bound.

        :param timeout: seconds to wait at most; default None: as long as it takes. Not in
            ``multiprocessing.Pool``. ``join`` returns None either way: ``stats().workers_alive``
            tells whether workers are left.
        :raises ValueError: the pool is still running (neither ``close()`` nor ``terminate()`` was
            called), as in the standard library.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        self._core.join(timeout)

    def terminate(self) -> None:
        """Stop now: kill the workers, fail what is outstanding, and clean what iterators hold.

        Unlike ``multiprocessing.Pool``, whose outstanding results then wait forever, every
        outstanding result fails with ``PoolTerminatedError``. The live ``imap`` iterators are
        closed first (they then stop iterating) and every result they hold, or that arrives while
        the pool stops, is passed to their ``cleanup``. Returns once the workers are gone (a
        thread pool cannot stop a running call: see ``RobustThreadPool``). Calling it again does
        nothing.

        :raises ExceptionGroup: some ``cleanup`` calls raised; every cleanup was run (and its error
            logged) first, and the pool is terminated all the same.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        errors = self._core.terminate()
        if errors:
            raise ExceptionGroup(f"robustpool: cleanup failed for {len(errors)} result(s)", errors)

    def __enter__(self) -> Self:
        self._core.check_running()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._core.gen != _forks.generation:
            return  # a forked child leaving the owner's with block: not its pool to stop
        if exc_type is None:
            self.close()
            self.join()
            return
        try:
            self.terminate()
        except ExceptionGroup as group:
            # Your exception is the one to see; cleanup failures (already logged) ride
            # along as a note rather than replacing it.
            if exc is not None:
                exc.add_note(f"robustpool: while terminating, {group}: {group.exceptions!r}")

    async def __aenter__(self) -> Self:
        self._core.check_running()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """As ``__exit__``, in a thread: the event loop goes on while the pool closes."""
        import asyncio  # a loop runs, so it is loaded already

        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is None or core.gen != _forks.generation:
            return  # never built, or a copy in a forked child: the pool is its owner's business
        if core.state is not State.TERMINATED and not core.engine.finished:
            warnings.warn(f"unclosed running pool {self!r}", ResourceWarning, source=self, stacklevel=2)
            core.abandon()

    def __repr__(self) -> str:
        core = getattr(self, "_core", None)
        state = core.state.value if core is not None else "terminated"
        return f"<{type(self).__name__} state={state} processes={self._config.processes}>"

    # -- scopes --

    def scope(self, *, on_error: OnError = "wait") -> AbstractContextManager[Scope]:
        """A scope over this pool: ``multi_scope(pool)``, yielding its one ``Scope``.

        ``with pool.scope() as s:`` waits, on leaving, for every task started through ``s`` (and
        closes the iterators opened through it), then raises their failures in one
        ``ExceptionGroup``.

        :param on_error: what a failure (or an exception in the body) does to the scope's other
            tasks: ``"wait"`` (the default) cancels those not started and waits for the running
            ones; ``"stop"`` also stops the running ones (a process pool kills their workers; a
            thread cannot be stopped, and is waited for).
        :returns: a context manager yielding the scope's ``Scope`` handle on this pool.
        :raises ValueError: on entering, ``on_error`` is neither ``"wait"`` nor ``"stop"``.
        :raises ExceptionGroup: on leaving, the failures of the scope's tasks (see ``multi_scope``).
        """
        return single_scope(self, on_error)

    # -- introspection --

    def stats(self) -> PoolStats:
        """A frozen snapshot of the pool: workers alive, items done, failed, retried and timed
        out, workers replaced and why, and each worker's task count and RSS.

        Read without stopping the pool, so counts may be a moment old.

        :returns: a ``PoolStats``.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        self._core.check_owner()
        return self._engine.stats()

    @property
    def processes(self) -> int:
        """How many workers the pool runs: ``processes`` as given, or its default when it was None."""
        return self._config.processes

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes alive right now, for tests and diagnostics.

        A worker still starting is not listed, and one may exit (be replaced) right after.

        :returns: the pids; always empty on a thread pool.
        """
        return self._engine.pids()


class RobustPool(PoolBase):
    """A process pool with the ``multiprocessing.Pool`` API that survives dying workers.

    A supervisor process is the parent of every worker. When a worker dies (a signal, the OOM
    killer, ``os._exit``), the one task it was running fails with ``WorkerLostError``, the
    worker is replaced, and the pool goes on; ``multiprocessing.Pool`` would wait forever.
    Functions, arguments and results travel with cloudpickle, so lambdas and closures work.

    Use it as ``with RobustPool() as pool:``. Unlike ``multiprocessing.Pool``, leaving the block
    normally waits for the outstanding work (``close()`` then ``join()``); leaving it by an
    exception terminates, after cleaning what the live ``imap`` iterators hold (a cleanup failure
    is added to your exception as a note). ``async with`` works too, without blocking the event
    loop. A pool garbage-collected before it finished warns (``ResourceWarning``) and is stopped
    without waiting. In a process forked from the owner the pool, its results and iterators raise
    ``RuntimeError``: create a new pool in the child.

    :param processes: how many worker processes; default None: ``os.cpu_count()``. At most 4096,
        and fewer when the descriptor limit (``RLIMIT_NOFILE``) would run out first: each worker
        takes two file descriptors in the owner.
    :param initializer: called as ``initializer(*initargs)`` once in every worker as it starts;
        default None. If it fails in three fresh workers in a row the pool is broken: its pending
        and new tasks fail with ``InitializerError`` (``multiprocessing.Pool`` respawns the
        workers forever).
    :param initargs: the arguments of ``initializer``; default ``()``.
    :param maxtasksperchild: recycle a worker after it was given this many tasks (chunks);
        default None: never. Its replacement starts at once, and no queued work is lost.
    :param context: a ``multiprocessing`` context, as in ``multiprocessing.Pool``; its start method
        picks how the supervisor starts (see ``start_method``). Workers are always forked by the
        supervisor. Default None: see ``start_method``.
    :param task_timeout: seconds a task may run before its worker (with its subprocesses) is
        killed and replaced, and the task fails with ``TaskTimeoutError``; default None: no
        limit, as ``math.inf``. Otherwise > 0 and at most 10^9. Loading the task's function and
        arguments in the worker (an import included) has its own allowance, the larger of
        ``task_timeout`` and 30 s. ``apply``, ``apply_async`` and the ``*map*`` methods take a
        ``task_timeout`` of their own.
    :param retries: how many times a task that killed its worker is run again on a fresh one;
        default 0. A task that killed ``retries + 1`` workers fails with ``WorkerLostError``,
        which lists every attempt. A timed-out task is not run again.
    :param memory_limit: bytes (an int) or a size string such as ``"512MiB"``, ``"2GB"`` or
        ``"1.5G"`` (``K``, ``M``, ``G``, ``T`` and ``KiB``, ``MiB``, ... are powers of 1024;
        ``KB``, ``MB``, ... powers of 1000); default None: no limit. A worker whose process tree's
        RSS passes it is recycled after its current task; one at twice the limit is killed, and its
        task fails with ``WorkerLostError``.
    :param start_method: how the supervisor starts: ``"fork"`` (a fork of this process),
        ``"forkserver"`` (a fork of a clean process started once per owner, the first time it is
        needed: safe with threads, and a few milliseconds per pool after the first) or
        ``"spawn"`` (a fresh interpreter for each pool). Default None: fork when the owner has a
        single thread, else forkserver. It must agree with ``context`` if both are given.
    :param buffersize: how many chunks an ``imap`` or ``imap_unordered`` keeps ahead of its
        consumer (a call's own ``buffersize`` overrides it); default None: ``max(64, 32 *
        processes)``. Fewer are kept when the items' pickles pass about 32 MiB in all, but never
        fewer than two chunks per worker.
    :param close_timeout: seconds that closing an ``imap`` iterator waits for its running tasks,
        so that it can clean their results; default 10.0. None or ``math.inf``: as long as they
        take. Results that arrive later are cleaned on arrival.
    :param engine: where the pool runs; default None: this machine's processes. A
        ``robustpool.dask.DaskEngine(client)`` runs it on a Dask cluster, with the same API,
        errors and guarantees (each Dask worker runs the pool's supervised processes, as many
        as it has threads); ``processes`` then defaults to the cluster's threads, and the
        other parameters apply on every Dask worker.
    :raises TypeError: a parameter has the wrong type (for ``maxtasksperchild``, an error that is
        also a ``ValueError``, which is what ``multiprocessing.Pool`` raises there).
    :raises ValueError: a parameter is out of range: ``processes`` below 1 or above the limit, a
        timeout not > 0 or above 10^9, ``retries`` below 0, a ``memory_limit`` that cannot be
        parsed or is not positive, a ``start_method`` other than fork, forkserver or spawn, or one that
        contradicts ``context``.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        task_timeout: float | None = None,
        retries: int = 0,
        memory_limit: int | str | None = None,
        start_method: str | None = None,
        buffersize: int | None = None,
        close_timeout: float | None = 10.0,
        engine: EngineSpec | None = None,
    ) -> None:
        spec = check_engine(engine)
        config = PoolConfig.build(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            context,
            task_timeout=task_timeout,
            retries=retries,
            memory_limit=memory_limit,
            start_method=start_method,
            buffersize=buffersize,
            close_timeout=close_timeout,
            default_workers=None if spec is None else spec.default_workers(),
            default_buffersize=None if spec is None else spec.default_buffersize,
        )
        self._config = config
        self._core = PoolCore(start_engine(config, spec))

    @property
    def supervisor_pid(self) -> int:
        """Pid of the supervisor process, the parent of every worker (for tests and diagnostics).

        It changes when the supervisor died and the pool started a new one.

        :raises ValueError: the pool runs on Dask (``engine=``): each Dask worker has its own
            supervisor there.
        """
        pid = getattr(self._engine, "supervisor_pid", None)  # a process engine, or chaos in front of one
        if not isinstance(pid, int):
            raise ValueError("this pool runs on Dask: each Dask worker runs its own supervisor, none runs here")
        return pid


RobustPool.__module__ = "robustpool"  # as imported by users (see _errors)

# A threaded owner's first pool needs a forkserver: fork it now, while this process may still
# have a single thread (see _zygote).
_zygote.fork_at_import()
