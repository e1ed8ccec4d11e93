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

from . import _forks
from ._calls import Mode, function_name
from ._config import PoolConfig, check_callable, positive_int, task_limit
from ._core import PoolCore, State, refuse_unsupported
from ._engine import Capability, Engine
from ._jobs._gather import GatherJob, MapResult
from ._jobs._iterators import IMapIterator
from ._jobs._single import AsyncResult, RobustFuture, SingleJob
from ._process._engine import ProcessEngine
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
    _engine: Engine
    _core: PoolCore

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
        """Run ``func(*args, **kwds)`` in a worker and return its result."""
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
        """Start ``func(*args, **kwds)`` in a worker; returns an AsyncResult.

        ``task_timeout`` overrides the pool's for this call (every ``*map*`` method takes it
        too; ``submit`` cannot, since its keyword arguments belong to ``fn``)."""
        self._core.check_running()
        check_callable(func)
        timeout = self._timeout(task_timeout)
        job = SingleJob(callback, error_callback, self._engine)
        item = (args if type(args) is tuple else tuple(args), dict(kwds) if kwds else {})
        self._core.start(job, func, Mode.APPLY, (item,), 1, False, timeout)
        return AsyncResult(job)

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> RobustFuture[R]:
        """Start ``fn(*args, **kwargs)``; returns a ``concurrent.futures.Future``.

        Unlike the standard library's, its ``cancel()`` stops the call even while it runs
        (its worker is killed and replaced), and it can be awaited."""
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
        """Apply ``func`` to every item; returns the list of results in order.

        ``progress``, here and on every call of many items: a tqdm bar (``tqdm.auto``) of the
        items as they complete: True, a dict of tqdm options (``total`` among them, for an
        input without a length), or a bar of your own (updated, not closed). Failures show
        in its postfix. Needs tqdm (``pip install 'robustpool[progress]'``)."""
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
        """Like ``map`` but returns a MapResult at once."""
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
        """Like ``map`` but each item is unpacked as the arguments: ``func(*item)``."""
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
        """Like ``starmap`` but returns a MapResult at once."""
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
        """Lazily apply ``func`` to every item; iterate the results in input order."""
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
        """Like ``imap`` but results come in the order they finish."""
        return self._imap(func, iterable, chunksize, False, cleanup, buffersize, task_timeout, progress)

    # -- lifecycle --

    def close(self) -> None:
        """Accept no new work; workers exit once everything submitted is done."""
        self._core.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the workers to exit after ``close()`` or ``terminate()``."""
        self._core.join(timeout)

    def terminate(self) -> None:
        """Stop now: kill the workers, fail outstanding results, clean what iterators hold."""
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
        """A scope over this pool (see ``robustpool.multi_scope``): ``with pool.scope() as s:``
        waits, on leaving, for every task started through ``s``, and raises their failures
        in one ExceptionGroup."""
        return single_scope(self, on_error)

    # -- introspection --

    def stats(self) -> PoolStats:
        """A frozen snapshot: workers alive, items done/failed/retried/timed out, workers
        replaced and why, and per-worker task counts and RSS."""
        self._core.check_owner()
        return self._engine.stats()

    @property
    def processes(self) -> int:
        return self._config.processes

    def worker_pids(self) -> list[int]:
        """Pids of the workers alive right now (for tests and diagnostics)."""
        return self._engine.pids()


class RobustPool(PoolBase):
    """A process pool with the ``multiprocessing.Pool`` API that survives dying workers.

    ``processes`` defaults to ``os.cpu_count()``. ``initializer(*initargs)`` runs once in
    every worker; if it fails in three fresh workers in a row the pool is broken and fails
    tasks with InitializerError. ``maxtasksperchild`` recycles a worker after that many
    tasks (chunks). Keyword-only: ``task_timeout`` (seconds a task may run before its
    worker is killed; TaskTimeoutError; loading the task's function and arguments in the
    worker has its own allowance, the larger of ``task_timeout`` and 30 s), ``retries`` (how many times a task that killed its
    worker is run again on a fresh one), ``memory_limit`` (bytes or a size such as
    ``"2GB"``: a worker whose process tree's RSS passes it is recycled after its current
    task; one at twice the limit is killed and its task fails with WorkerLostError),
    ``start_method`` (``"fork"`` or ``"spawn"`` for
    the supervisor; by default fork when the owner has a single thread), ``buffersize``
    (chunks an ``imap`` keeps ahead of its consumer; fewer for items whose pickles pass
    about 32 MiB in all) and ``close_timeout`` (how long closing
    an ``imap`` iterator waits for running tasks so it can clean their results; None or
    ``math.inf``: as long as they take). ``context``, as in ``multiprocessing.Pool``, is a
    ``multiprocessing`` context whose start method picks how the supervisor starts (fork, or
    a fresh interpreter for spawn and forkserver); workers are always forked by it.
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
    ) -> None:
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
        )
        self._config = config
        refuse_unsupported(config, ProcessEngine.capabilities, "the process engine")
        self._engine: Engine = ProcessEngine(config)
        self._core = PoolCore(self._engine)

    @property
    def supervisor_pid(self) -> int:
        engine = self._engine
        assert isinstance(engine, ProcessEngine)
        return engine.supervisor_pid


RobustPool.__module__ = "robustpool"  # as imported by users (see _errors)
