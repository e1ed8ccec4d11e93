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

from . import _forks
from ._calls import Mode
from ._config import EXECUTOR_NAMES, PoolConfig, check_callable, positive_int
from ._core import PoolCore, State, refuse_unsupported
from ._engine import Engine
from ._jobs._iterators import IMapIterator
from ._jobs._single import RobustFuture
from ._jobs._stream import StreamJob
from ._process._engine import ProcessEngine
from ._progress import ProgressArg, length_of
from ._scope import OnError, Scope, single_scope
from ._stats import PoolStats

R = TypeVar("R")
P = ParamSpec("P")


class ExecutorBase(Executor):
    """The ``concurrent.futures.Executor`` API over an engine: everything of
    ``RobustExecutor`` and ``RobustThreadPoolExecutor`` but how they build their engine."""

    _config: PoolConfig
    _engine: Engine
    _core: PoolCore
    _lock: threading.Lock  # orders submit() against shutdown()

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> RobustFuture[R]:
        """Start ``fn(*args, **kwargs)``; returns a ``concurrent.futures.Future``.

        Its ``cancel()`` stops the call even while it runs (the worker is killed and
        replaced); it can be awaited. RuntimeError after ``shutdown()``."""
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
        """Lazily apply ``fn`` to the items of ``iterables`` in parallel (as ``zip``);
        results in order.

        ``timeout`` counts from this call, as in the standard library: a result not ready
        by then raises ``TimeoutError``. The input is read a window of ``buffersize`` chunks
        ahead of the consumer. An error is raised at its item's position and ends the
        iteration. Leaving the iteration early (or its error) cancels what has not started
        and passes every computed result nobody received to ``cleanup``, exactly once.
        ``progress``: a tqdm bar of the items as they complete (True, a dict of tqdm options,
        ``total`` among them for inputs without a length, or a bar of your own).
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
        """Accept no new work; with ``wait``, return once every worker has exited.

        ``cancel_futures`` cancels the futures that have not started (their waiters wake at
        once) and closes the live ``map`` iterators (cleaning what they hold); running
        futures finish. Calling it again is harmless."""
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
        """A scope over this pool (see ``robustpool.multi_scope``): ``with pool.scope() as s:``
        waits, on leaving, for every task started through ``s``, and raises their failures
        in one ExceptionGroup."""
        return single_scope(self, on_error)

    # -- introspection --

    def stats(self) -> PoolStats:
        """A frozen snapshot, as ``RobustPool.stats()``."""
        self._core.check_owner()
        return self._engine.stats()

    @property
    def max_workers(self) -> int:
        return self._config.processes

    def worker_pids(self) -> list[int]:
        """Pids of the workers alive right now (for tests and diagnostics)."""
        return self._engine.pids()


@final
class RobustExecutor(ExecutorBase):
    """A process pool executor that survives dying workers.

    ``max_workers`` defaults to ``os.cpu_count()``; ``mp_context`` picks how the supervisor
    starts (as ``RobustPool``'s ``context``); ``initializer(*initargs)`` runs once in every
    worker, and if it fails in three fresh workers in a row the executor is broken and
    fails futures with InitializerError (also a ``concurrent.futures.BrokenExecutor``);
    ``max_tasks_per_child`` recycles a worker after that many tasks. Keyword-only, as on
    ``RobustPool``: ``task_timeout``, ``retries``, ``memory_limit``, ``start_method``,
    ``buffersize`` (chunks ``map`` keeps ahead of its consumer) and ``close_timeout``.
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
    ) -> None:
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
        )
        self._config = config
        refuse_unsupported(config, ProcessEngine.capabilities, "the process engine")
        self._engine: Engine = ProcessEngine(config)
        self._core = PoolCore(self._engine)
        self._lock = threading.Lock()  # orders submit() against shutdown()


@final
class MapIterator(Generic[R]):
    """What ``RobustExecutor.map`` returns: its results in order, by the call's deadline.

    An object rather than a generator, so that closing or dropping it before the first
    result still closes the stream, and no result is kept after it was handed out. Closed
    when exhausted, when an item's error or the deadline ends it (at once: results still
    running are cleaned when they arrive), by ``close()`` (which waits up to
    ``close_timeout`` for running items, to clean them) and by garbage collection.
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
        """Cancel what has not started; clean every computed result never handed out,
        waiting up to ``close_timeout`` for running items (see ``IMapIterator.close``)."""
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
