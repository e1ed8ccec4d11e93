"""RobustPool: the ``multiprocessing.Pool`` API over robustpool's supervised runtime.

This module is only the facade: it validates arguments at the call, turns each call into a
job and its tasks, and hands them to the engine (``_dispatcher.Dispatcher``). It holds no
worker state, so another engine can sit behind the same API.

Deliberate differences from ``multiprocessing.Pool`` (all documented in the README):

* leaving ``with`` normally waits for outstanding work (close + join); leaving it by an
  exception terminates, after cleaning what the live ``imap`` iterators hold;
* ``imap``/``imap_unordered`` read their input lazily, a bounded window ahead of the
  consumer, instead of all at once;
* ``terminate()`` fails outstanding results with PoolTerminatedError instead of leaving
  them waiting forever.
"""

from __future__ import annotations

import atexit
import gc
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar, cast

from . import _forks
from ._calls import Mode
from ._config import PoolConfig, check_callable, positive_int, task_limit
from ._errors import TaskSerializationError
from ._process._loop import Dispatcher, shutdown_all
from ._process._tasks import FuncRef, Job, Task, make_tasks, pickle_function
from ._results import AsyncResult, Cleanup, FutureJob, IMapIterator, MapResult, _IMapJob
from ._stats import PoolStats

T = TypeVar("T")
R = TypeVar("R")

_RUN, _CLOSE, _TERMINATE = "running", "closed", "terminated"
_FUNC_MEMO = 256
_atexit_lock = threading.Lock()
_atexit_done = False


def _register_atexit() -> None:
    global _atexit_done
    with _atexit_lock:
        if not _atexit_done:
            atexit.register(shutdown_all)
            _atexit_done = True


class RobustPool:
    """A process pool with the ``multiprocessing.Pool`` API that survives dying workers.

    ``processes`` defaults to ``os.cpu_count()``. ``initializer(*initargs)`` runs once in
    every worker; if it fails in three fresh workers in a row the pool is broken and fails
    tasks with InitializerError. ``maxtasksperchild`` recycles a worker after that many
    tasks (chunks). Keyword-only: ``task_timeout`` (seconds a task may run before its
    worker is killed; TaskTimeoutError), ``retries`` (how many times a task that killed its
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
        self._state = _TERMINATE  # until fully built, so __del__ of a failed init is quiet
        self._gen = _forks.generation
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
        self._task_timeout = config.task_timeout
        self._close_timeout = config.close_timeout
        self._processes = config.processes
        self._buffersize = config.buffersize
        _register_atexit()
        self._engine = Dispatcher(config)
        self._iterators: weakref.WeakSet[IMapIterator[Any]] = weakref.WeakSet()
        self._funcs: dict[bytes, FuncRef] = {}
        self._state = _RUN

    # -- helpers --

    def _check_running(self) -> None:
        _forks.check(self._gen, "pool")
        if self._state != _RUN:
            raise ValueError("Pool not running")
        if self._engine.finished and self._engine.broken is not None:
            raise self._engine.broken

    def _function(self, func: Callable[..., Any]) -> FuncRef:
        """Pickle ``func`` for one call, reusing the id of an identical earlier pickle so
        workers unpickle a function once, not once per ``apply_async``."""
        ref = pickle_function(func)
        known = self._funcs.get(ref.blob)
        if known is not None:
            return known
        if len(self._funcs) >= _FUNC_MEMO:
            del self._funcs[next(iter(self._funcs))]
        self._funcs[ref.blob] = ref
        return ref

    def _timeout(self, task_timeout: float | None) -> float:
        """A call's own task_timeout, or the pool's."""
        return self._task_timeout if task_timeout is None else task_limit("task_timeout", task_timeout)

    def _start(
        self,
        job: Job,
        func: Callable[..., Any],
        mode: Mode,
        items: Sequence[Any],
        chunksize: int,
        indexed: bool,
        timeout: float,
        stream: bool = False,
    ) -> None:
        try:
            ref = self._function(func)
        except TaskSerializationError as exc:
            for k in range(len(items)):
                job.fail(k, exc)
            return
        # Tasks go to the dispatcher in batches of doubling size (1, 2, 4, ...): workers
        # start on the first chunk while the rest are still being pickled, for a handful of
        # wake-ups whatever the number of chunks.
        tasks: list[Task] = []
        sent = 0
        for start in range(0, len(items), chunksize):
            chunk = items[start : start + chunksize]
            tasks += make_tasks(job, ref, mode, start, chunk, timeout, indexed, stream)
            if len(tasks) > sent:
                self._engine.submit(tasks)
                sent += len(tasks)
                tasks = []
        if tasks:
            self._engine.submit(tasks)

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
        self._check_running()
        check_callable(func)
        timeout = self._timeout(task_timeout)
        result: AsyncResult[T] = AsyncResult(callback, error_callback)
        self._start(result, func, Mode.APPLY, [(tuple(args), dict(kwds or {}))], 1, False, timeout)
        return result

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Start ``fn(*args, **kwargs)``; returns a ``concurrent.futures.Future``."""
        self._check_running()
        check_callable(fn, "fn")
        future: Future[T] = Future()
        self._start(FutureJob(future), fn, Mode.APPLY, [(args, kwargs)], 1, False, self._task_timeout)
        return future

    # -- map --

    def _default_chunksize(self, n: int) -> int:
        chunksize, extra = divmod(n, self._processes * 4)
        return max(1, chunksize + (1 if extra else 0))

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        mode: Mode,
        chunksize: int | None,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        cleanup: Cleanup | None,
        task_timeout: float | None,
    ) -> MapResult[Any]:
        self._check_running()
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
        result: MapResult[Any] = MapResult(len(items), callback, error_callback, cleanup)
        if items:
            # With a cleanup, chunks reply item by item, so terminating mid-chunk still
            # hands back (and cleans) the items that finished.
            self._start(result, func, mode, items, size, True, timeout, stream=cleanup is not None and size > 1)
        return result

    def map(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        cleanup: Cleanup | None = None,
        task_timeout: float | None = None,
    ) -> list[R]:
        """Apply ``func`` to every item; returns the list of results in order."""
        return self._map_async(func, iterable, Mode.MAP, chunksize, None, None, cleanup, task_timeout).get()

    def map_async(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        cleanup: Cleanup | None = None,
        task_timeout: float | None = None,
    ) -> MapResult[R]:
        """Like ``map`` but returns a MapResult at once."""
        return self._map_async(func, iterable, Mode.MAP, chunksize, callback, error_callback, cleanup, task_timeout)

    def starmap(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        cleanup: Cleanup | None = None,
        task_timeout: float | None = None,
    ) -> list[R]:
        """Like ``map`` but each item is unpacked as the arguments: ``func(*item)``."""
        return self._map_async(func, iterable, Mode.STAR, chunksize, None, None, cleanup, task_timeout).get()

    def starmap_async(
        self,
        func: Callable[..., R],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
        *,
        cleanup: Cleanup | None = None,
        task_timeout: float | None = None,
    ) -> MapResult[R]:
        """Like ``starmap`` but returns a MapResult at once."""
        return self._map_async(func, iterable, Mode.STAR, chunksize, callback, error_callback, cleanup, task_timeout)

    # -- imap --

    def _imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int,
        ordered: bool,
        cleanup: Cleanup | None,
        buffersize: int | None,
        task_timeout: float | None,
    ) -> IMapIterator[Any]:
        self._check_running()
        check_callable(func)
        timeout = self._timeout(task_timeout)
        positive_int("chunksize", chunksize)
        if cleanup is not None:
            check_callable(cleanup, "cleanup")
        if buffersize is not None:
            positive_int("buffersize", buffersize)
        ref = self._function(func)
        window = buffersize or self._buffersize
        job = _IMapJob(self._engine, ref, Mode.MAP, iterable, chunksize, window, ordered, cleanup, self._close_timeout, timeout)
        it: IMapIterator[Any] = IMapIterator(job)
        self._iterators.add(it)
        return it

    def imap(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        cleanup: Cleanup | None = None,
        buffersize: int | None = None,
        task_timeout: float | None = None,
    ) -> IMapIterator[R]:
        """Lazily apply ``func`` to every item; iterate the results in input order."""
        return self._imap(func, iterable, chunksize, True, cleanup, buffersize, task_timeout)

    def imap_unordered(
        self,
        func: Callable[[Any], R],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        cleanup: Cleanup | None = None,
        buffersize: int | None = None,
        task_timeout: float | None = None,
    ) -> IMapIterator[R]:
        """Like ``imap`` but results come in the order they finish."""
        return self._imap(func, iterable, chunksize, False, cleanup, buffersize, task_timeout)

    # -- lifecycle --

    def close(self) -> None:
        """Accept no new work; workers exit once everything submitted is done."""
        _forks.check(self._gen, "pool")
        if self._state == _RUN:
            self._state = _CLOSE
            self._engine.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the workers to exit after ``close()`` or ``terminate()``."""
        _forks.check(self._gen, "pool")
        if self._state == _RUN:
            raise ValueError("Pool is still running")
        if self._state == _CLOSE:
            # Lazy iterators still owe their input: read it now, as the standard
            # library's eager imap would have -- but only for iterators the caller can
            # still reach. One dropped inside a reference cycle is collected (and closed)
            # first, so a dropped endless input is never read forever.
            gc.collect()
            deadline = None if timeout is None else time.monotonic() + timeout
            for it in list(self._iterators):
                it._job._feed(everything=True, deadline=deadline)
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
        self._engine.join(timeout)

    def terminate(self) -> None:
        """Stop now: kill the workers, fail outstanding results, clean what iterators hold."""
        _forks.check(self._gen, "pool")
        if self._state == _TERMINATE and self._engine.finished:
            return
        self._state = _TERMINATE
        # Iterators close first, so results the dispatcher still reads from the workers'
        # sockets while terminating go to their cleanup, not into a buffer nobody reads.
        errors: list[Exception] = []
        iterators = list(self._iterators)
        for it in iterators:
            it._job._hold_late()  # results drained while stopping are cleaned below, here
            errors += it._job._close()
        self._engine.terminate()
        self._engine.join()
        for it in iterators:
            errors += it._job._release_late()
        if errors:
            raise ExceptionGroup(f"robustpool: cleanup failed for {len(errors)} result(s)", errors)

    def __enter__(self) -> RobustPool:
        self._check_running()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._gen != _forks.generation:
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

    def __del__(self) -> None:
        if getattr(self, "_gen", None) != _forks.generation:
            return  # a copy in a forked child: the pool is its owner's business
        if getattr(self, "_state", _TERMINATE) != _TERMINATE and not self._engine.finished:
            warnings.warn(f"unclosed running pool {self!r}", ResourceWarning, source=self, stacklevel=2)
            self._state = _TERMINATE
            self._engine.terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} state={self._state} processes={self._processes}>"

    # -- introspection --

    def stats(self) -> PoolStats:
        """A frozen snapshot: workers alive, items done/failed/retried/timed out, workers
        replaced and why, and per-worker task counts and RSS."""
        _forks.check(self._gen, "pool")
        return self._engine.stats()

    @property
    def processes(self) -> int:
        return self._processes

    def worker_pids(self) -> list[int]:
        """Pids of the workers alive right now (for tests and diagnostics)."""
        return self._engine.pids()

    @property
    def supervisor_pid(self) -> int:
        return self._engine.supervisor_pid


for _cls in (RobustPool,):
    _cls.__module__ = "robustpool"  # as imported by users (see _errors)
