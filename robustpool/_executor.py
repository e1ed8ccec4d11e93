"""RobustExecutor: the ``concurrent.futures.Executor`` API over an engine.

The same engine and lifecycle core as ``RobustPool`` (see ``_core``); what differs is the
vocabulary of ``concurrent.futures``: ``submit`` returns a real ``Future`` (a RobustFuture),
``map`` returns a lazy generator, ``shutdown`` ends it.

Deliberate differences from ``ProcessPoolExecutor`` (documented in docs/executor.md):

* a worker's death fails only the future of the task it ran (WorkerLostError); the
  executor is never broken by it;
* ``cancel()`` of a running future stops it: its worker is killed and replaced;
* ``map`` reads its input lazily, a bounded window ahead of the consumer (as 3.14's
  ``buffersize=``), and takes ``cleanup=`` as ``imap`` does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, final

from . import _forks, _zygote
from ._calls import Mode
from ._config import EXECUTOR_NAMES, PoolConfig, check_callable, positive_int
from ._core import PoolCore, State, check_engine, start_engine
from ._engine import Engine, EngineSpec
from ._jobs._iterators import IMapIterator
from ._jobs._single import RobustFuture
from ._jobs._stream import StreamJob
from ._progress import ProgressArg, length_of
from ._scope import OnError, Scope, single_scope
from ._stats import PoolStats

R = TypeVar("R")
P = ParamSpec("P")


class ExecutorBase(Executor):
    """The ``concurrent.futures.Executor`` API over an engine: everything of
    ``RobustExecutor`` and ``RobustThreadPoolExecutor`` but how they build their engine."""

    _config: PoolConfig
    _core: PoolCore
    _lock: threading.Lock  # orders submit() against shutdown()

    @property
    def _engine(self) -> Engine:
        # Read through the core, the one owner of the pool's engine: robustpool.testing puts
        # its chaos engine in front of it while a chaos run is on.
        return self._core.engine

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> RobustFuture[R]:
        """Start ``fn(*args, **kwargs)`` in a worker; returns a ``concurrent.futures.Future``.

        The call has the executor's ``task_timeout``. A worker's death fails this future alone
        (``ProcessPoolExecutor`` breaks the whole executor). Unlike the standard library's, the
        future's ``cancel()`` stops the call even while it runs on a process executor (the worker
        is killed and replaced), and the future can be awaited.

        :param fn: the callable to run (positional only); on a process executor lambdas and
            closures work (cloudpickle).
        :param args: positional arguments for ``fn``.
        :param kwargs: keyword arguments for ``fn``.
        :returns: a ``RobustFuture``. Its ``result()`` returns what ``fn`` returned, or raises
            the task's own exception (rebuilt with the worker's frames), or
            ``WorkerLostError``, ``TaskTimeoutError``, ``TaskSerializationError``,
            ``RemoteTaskError``, ``InitializerError`` or ``WorkerStartError``.
        :raises RuntimeError: after ``shutdown()`` (``"cannot schedule new futures after
            shutdown"``, as in the standard library), or in a process forked from the owner.
        :raises InitializerError: the executor is broken by its initializer (a
            ``concurrent.futures.BrokenExecutor``, as ``BrokenProcessPool`` is); likewise
            ``WorkerStartError`` when no worker could be started.
        :raises TypeError: ``fn`` is not callable.
        """
        check_callable(fn, "fn")
        with self._lock:
            self._check_open()
            return self._core.submit(fn, args, kwargs, self._config.task_timeout)

    def _check_open(self) -> None:
        _forks.check(self._core.gen, "executor")
        if self._core.state is not State.RUNNING:
            raise RuntimeError("cannot schedule new futures after shutdown")
        broken = self._engine.broken
        if broken is not None:
            raise broken  # InitializerError, a BrokenExecutor: as ProcessPoolExecutor's submit

    def map(  # cleanup= is ours; the rest is Executor.map (buffersize= as in 3.14)
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        cleanup: Callable[[R], object] | None = None,
        progress: ProgressArg = None,
    ) -> MapIterator[R]:
        """Lazily apply ``fn`` to the items of ``iterables`` in parallel; iterate the results in order.

        ``fn`` is called as ``fn(*args)`` with one item of each iterable, as ``zip`` pairs them
        (the shortest ends it). Unlike ``Executor.map`` before Python 3.14, which submits every
        item at the call, the input is read lazily, a window of ``buffersize`` chunks ahead of the
        consumer (as 3.14's ``buffersize=``). An item's error is raised at its position and ends
        the iteration, as in the standard library. Leaving the iteration early (``break``,
        ``close()``, dropping the iterator) or its error cancels what has not started and passes
        every computed result nobody received to ``cleanup``, exactly once. Each task has the
        executor's ``task_timeout``.

        :param fn: called as ``fn(*args)``.
        :param iterables: one or more iterables, read lazily.
        :param timeout: seconds from this call, as in the standard library: a result not ready by
            then raises ``TimeoutError`` and ends the iteration; default None: no limit.
        :param chunksize: items sent to a worker together; default 1. Must be 1 or more.
        :param buffersize: chunks to keep ahead of the consumer; default None: the executor's
            ``buffersize``.
        :param cleanup: called as ``cleanup(result)`` in the owner, exactly once, for every
            computed result the consumer never received; default None. Not in the standard library.
        :param progress: a tqdm bar (``tqdm.auto``) of the items as they complete, failures in its
            postfix: True, a dict of tqdm options (``total`` among them, for inputs without a
            length), or a bar of your own (updated, not closed); default None: no bar. Needs tqdm.
        :returns: a ``MapIterator`` of the results, in input order.
        :raises RuntimeError: after ``shutdown()``, or in a process forked from the owner.
        :raises InitializerError: the executor is broken (see ``submit``); likewise
            ``WorkerStartError``.
        :raises TaskSerializationError: ``fn`` cannot be pickled.
        :raises ValueError: ``chunksize`` or ``buffersize`` is below 1.
        :raises TypeError: ``fn`` or ``cleanup`` is not callable, a parameter has the wrong type, or
            ``progress`` is not True, a dict or a bar.
        :raises ImportError: ``progress`` asks for a bar and tqdm is not installed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        check_callable(fn, "fn")
        positive_int("chunksize", chunksize)
        if buffersize is not None:
            positive_int("buffersize", buffersize)
        if cleanup is not None:
            check_callable(cleanup, "cleanup")
        lengths = [n for n in map(length_of, iterables) if n is not None]
        total = min(lengths) if iterables and len(lengths) == len(iterables) else None  # zip's length
        with self._lock:
            self._check_open()
            config = self._config
            window = buffersize or config.buffersize
            items = zip(*iterables, strict=False)  # the shortest input ends it, as in the standard library
            it, job = self._core.stream(
                fn, Mode.STAR, items, chunksize, window, True, cleanup, config.close_timeout, config.task_timeout, progress, total
            )
        return MapIterator(it, job, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no new work; with ``wait``, return once the work is done and every worker has quit.

        Waiting first reads what the live ``map`` iterators still owe of their input (the
        standard library submits a map's every item at the call): close an iterator you leave
        early over an endless input. Calling it again is harmless. Leaving ``with`` calls
        ``shutdown(wait=True)``, even on an exception, as in the standard library. A worker has
        quit once it has sent its last result and closed its end; the kernel's teardown of
        its process is not waited for (the supervisor reaps it, and this process reaps the
        supervisor at its next pool or at exit, within a bound), as in ``RobustPool.join``.

        :param wait: wait for the outstanding work and for the workers to quit; default True. With
            False the work still runs to its end in the background.
        :param cancel_futures: cancel the futures that have not started (their waiters wake at
            once) and close the live ``map`` iterators (cleaning what they hold); running futures
            finish. Default False.
        :raises RuntimeError: called in a process forked from the owner.
        """
        with self._lock:
            self._core.close()
        if cancel_futures:
            self._engine.cancel_all()  # the futures not started end cancelled, waiters woken
            self._core.close_streams()
        if wait:
            self._core.join()

    def __enter__(self) -> Self:
        with self._lock:
            self._check_open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._core.gen != _forks.generation:
            return  # a forked child leaving the owner's with block
        self.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """As ``__exit__``, in a thread: the event loop goes on while the executor shuts down."""
        import asyncio  # a loop runs, so it is loaded already

        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is None or core.gen != _forks.generation:
            return
        if core.state is State.RUNNING:
            # As ProcessPoolExecutor: a dropped executor finishes what was submitted.
            core.close()

    def __repr__(self) -> str:
        core = getattr(self, "_core", None)
        state = "running" if core is not None and core.state is State.RUNNING else "shut down"
        return f"<{type(self).__name__} state={state} max_workers={self._config.processes}>"

    # -- scopes --

    def scope(self, *, on_error: OnError = "wait") -> AbstractContextManager[Scope]:
        """A scope over this executor: ``multi_scope(executor)``, yielding its one ``Scope``.

        ``with executor.scope() as s:`` waits, on leaving, for every task started through ``s``
        (and closes the iterators opened through it), then raises their failures in one
        ``ExceptionGroup``.

        :param on_error: what a failure (or an exception in the body) does to the scope's other
            tasks: ``"wait"`` (the default) cancels those not started and waits for the running
            ones; ``"stop"`` also stops the running ones (a process executor kills their workers;
            a thread cannot be stopped, and is waited for).
        :returns: a context manager yielding the scope's ``Scope`` handle on this executor.
        :raises ValueError: on entering, ``on_error`` is neither ``"wait"`` nor ``"stop"``.
        :raises ExceptionGroup: on leaving, the failures of the scope's tasks (see ``multi_scope``).
        """
        return single_scope(self, on_error)

    # -- introspection --

    def stats(self) -> PoolStats:
        """A frozen snapshot of the executor, as ``RobustPool.stats()``: workers alive, items
        done, failed, retried and timed out, workers replaced and why, each worker's tasks and RSS.

        :returns: a ``PoolStats``.
        :raises RuntimeError: called in a process forked from the owner.
        """
        self._core.check_owner()
        return self._engine.stats()

    @property
    def max_workers(self) -> int:
        """How many workers the executor runs: ``max_workers`` as given, or its default when it was None."""
        return self._config.processes

    def worker_pids(self) -> list[int]:
        """Pids of the worker processes alive right now, for tests and diagnostics.

        A worker still starting is not listed, and one may exit (be replaced) right after.

        :returns: the pids; always empty on a thread executor.
        """
        return self._engine.pids()


@final
class RobustExecutor(ExecutorBase):
    """A ``concurrent.futures`` process pool executor that survives dying workers.

    ``ProcessPoolExecutor``'s API over the same supervised workers as ``RobustPool``. Where it
    differs on purpose: a worker's death fails only the future of the task it ran, with
    ``WorkerLostError``, and the executor goes on (``ProcessPoolExecutor`` is broken for
    good, every pending future failing with ``BrokenProcessPool``); ``cancel()`` of a running
    future stops it (its worker is killed and replaced); ``map`` reads its input lazily and takes
    ``cleanup=``. Leaving ``with`` calls ``shutdown(wait=True)``; ``async with`` does it without
    blocking the event loop. An executor garbage-collected while running finishes what was
    submitted, as ``ProcessPoolExecutor`` does.

    :param max_workers: how many worker processes; default None: ``os.cpu_count()``. At most
        4096, fewer when the descriptor limit would run out (two per worker in the owner).
    :param mp_context: a ``multiprocessing`` context: picks how the supervisor starts, as
        ``RobustPool``'s ``context``; default None.
    :param initializer: called as ``initializer(*initargs)`` once in every worker; default None. If
        it fails in three fresh workers in a row the executor is broken: futures fail with
        ``InitializerError`` (also a ``concurrent.futures.BrokenExecutor``), and ``submit``
        raises it.
    :param initargs: the arguments of ``initializer``; default ``()``.
    :param max_tasks_per_child: recycle a worker after it was given this many tasks; default None:
        never. Unlike ``ProcessPoolExecutor``'s, it works with any start method.
    :param task_timeout: seconds a task may run before its worker is killed and its future fails
        with ``TaskTimeoutError``; default None: no limit (see ``RobustPool``).
    :param retries: how many times a task that killed its worker is run again; default 0 (see
        ``RobustPool``).
    :param memory_limit: bytes or a size such as ``"2GB"``; default None: no limit (see
        ``RobustPool``).
    :param start_method: ``"fork"``, ``"forkserver"`` or ``"spawn"`` for the supervisor; default None (see
        ``RobustPool``).
    :param buffersize: chunks ``map`` keeps ahead of its consumer; default None:
        ``max(64, 32 * max_workers)``.
    :param close_timeout: seconds closing a ``map`` iterator waits for its running items, to clean
        their results; default 10.0; None or ``math.inf``: as long as they take.
    :param engine: where the executor runs; default None: this machine's processes. A
        ``robustpool.dask.DaskEngine(client)`` runs it on a Dask cluster (see ``RobustPool``);
        ``max_workers`` then defaults to the cluster's threads.
    :raises TypeError: a parameter has the wrong type.
    :raises ValueError: a parameter is out of range (``"max_workers must be greater than 0"``, as
        in the standard library; the rest as on ``RobustPool``).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: int | None = None,
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
            max_workers,
            initializer,
            initargs,
            max_tasks_per_child,
            mp_context,
            task_timeout=task_timeout,
            retries=retries,
            memory_limit=memory_limit,
            start_method=start_method,
            buffersize=buffersize,
            close_timeout=close_timeout,
            names=EXECUTOR_NAMES,
            default_workers=None if spec is None else spec.default_workers(),
            default_buffersize=None if spec is None else spec.default_buffersize,
        )
        self._config = config
        self._core = PoolCore(start_engine(config, spec))
        self._lock = threading.Lock()  # orders submit() against shutdown()


@final
class MapIterator(Generic[R]):
    """What an executor's ``map`` returns: an iterator of its results in order, by the call's deadline.

    Made by the executor, not by users. An object rather than the standard library's
    generator, so that closing or dropping it before the first result still closes the stream,
    and no result is kept after it was handed out. ``next()`` raises an item's error at its
    position, or ``TimeoutError`` once the call's ``timeout`` has passed; either ends the
    iteration. It is closed when exhausted, when an item's error or the deadline ends it (at
    once: results still running are cleaned when they arrive), by ``close()`` (which waits up
    to ``close_timeout`` for running items, to clean them) and by garbage collection. After
    that, iteration stops.
    """

    def __init__(self, it: IMapIterator[R], job: StreamJob, deadline: float | None) -> None:
        self._it = it
        self._job = job
        self._deadline = deadline

    def __iter__(self) -> MapIterator[R]:
        return self

    def __next__(self) -> R:
        job = self._job
        if job.closed:
            raise StopIteration
        timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        try:
            return job.next(timeout, TimeoutError)  # type: ignore[no-any-return]
        except StopIteration:
            self._it.close()
            raise
        except BaseException:
            # As the standard library: the error (or the timeout) ends the iteration, now.
            job.close_now()
            raise

    def close(self) -> None:
        """Stop the iteration: cancel what has not started and clean every computed result never
        handed out, waiting up to the executor's ``close_timeout`` seconds for running items
        (those arriving later are cleaned on arrival). Calling it again does nothing.

        :raises ExceptionGroup: some ``cleanup`` calls raised; all of them were run first.
        :raises RuntimeError: called in a process forked from the owner.
        """
        if not self._job.closed:
            self._it.close()

    def __del__(self) -> None:
        # Dropped: close without waiting, as an abandoned imap iterator does (running
        # items are cleaned when they arrive).
        job = getattr(self, "_job", None)
        if job is not None and not job.closed and job.gen == _forks.generation:
            with contextlib.suppress(BaseException):
                job.close_now()


RobustExecutor.__module__ = "robustpool"  # as imported by users (see _errors)
MapIterator.__module__ = "robustpool"

# A threaded owner's first pool needs a forkserver: fork it now, while this process may still
# have a single thread (see _zygote).
_zygote.fork_at_import()
