"""One adapter per pool under test, all behind the same small interface (``PoolHandle``).

A ``PeerSpec`` says how to find a peer (its module, its distribution for the version) and
how to build a fresh pool of it. Each handle exposes the few operations the cases need:
``map`` (list of results), ``imap`` (lazy, in order), ``submit`` (one task, later ``get``),
``close`` (graceful, waits for the workers) and ``kill`` (hard stop after a failure).

Mapping of the operations onto each peer's own API:

* ``imap`` with a chunksize: ``Pool.imap`` for robustpool and multiprocessing,
  ``Executor.map(chunksize=)`` for concurrent.futures and loky,
  ``pool.map(f, it, chunksize=).result()`` for pebble, ``WorkerPool.imap(chunk_size=)`` for mpire;
* loky goes through ``get_reusable_executor()`` for every call, its documented usage, which
  hands out a new executor when the previous one broke; ``close`` shuts it down so the next
  repeat gets a fresh one;
* mpire's ``WorkerPool`` is built with ``keep_alive=True`` so its workers outlive one call,
  like every other pool here.

The ``calls`` cases issue single calls one by one: ``caller()`` gives the peer's own
single-call API as an (issue, take) pair, looked up once per batch of calls;
``async_caller()`` gives an awaitable single call (None when the peer has none):

* ``apply_async(f, (x,))`` + ``get()`` for robustpool, multiprocessing and mpire;
  ``submit(f, x)`` + ``result()`` for concurrent.futures, loky, and robustpool's variants
  ``robustpool.submit`` (``RobustPool.submit``) and ``RobustExecutor``;
  ``schedule(f, args=(x,))`` + ``result()`` for pebble;
* awaited: robustpool's ``AsyncResult`` and futures themselves (both are awaitable);
  ``loop.run_in_executor(executor, f, x)`` for concurrent.futures and loky;
  ``asyncio.wrap_future(pool.schedule(...))`` for pebble; none for multiprocessing and mpire.

A *variant* (``variant_of``) is another API of a peer, measured as a row of its own in the
cases it names (``only_cases``); selecting the peer selects its variants too.

Thread pools (``threads=True``) are peers of their own kind, ranked among themselves: the
same operations over threads of the owner, where nothing is pickled. They mirror the process
peers API for API, so each has a stdlib twin with the same API (its "x stdlib" reference):

* ``RobustThreadPool`` and ``multiprocessing.pool.ThreadPool`` (its twin) as robustpool and
  ``multiprocessing.Pool``: ``apply_async`` + ``get``, ``Pool.imap``, ``Pool.map``; awaited:
  robustpool's ``AsyncResult`` itself, none for ``ThreadPool``;
* ``RobustThreadPoolExecutor`` (a variant of RobustThreadPool, in the calls cases) and
  ``ThreadPoolExecutor`` (its twin) as ``RobustExecutor`` and ``ProcessPoolExecutor``:
  ``submit`` + ``result``; ``Executor.map(chunksize=)``, which ThreadPoolExecutor ignores (one
  future per item, ``chunks=False``); awaited: the RobustFuture itself,
  ``loop.run_in_executor`` for ThreadPoolExecutor.

robustpool's two thread pools also have both stdlib thread pools as ``rivals``: the issue
asks them to be at least on par with the faster of the two, so the per-call cases say how
they compare with it. The thread pools run only in ``THREAD_CASES``, where a thread measures
what a process does: the per-call and per-item overhead cases and startup. Not in recovery
(its task SIGKILLs its worker: on threads, the owner itself), cpu_1ms (pure-Python work holds
the GIL, so it would measure the GIL, not the pool), payload_1MB (bytes pass by reference:
nothing travels) or imap_memory (robustpool and multiprocessing only), nor in the process
pools' start-up and shutdown cases (startup_threaded, import, exit).

The Dask peers (``group="dask"``: selected by ``--dask`` or by name, never by default) run
on the run's ``distributed.LocalCluster`` (see ``cluster``), built with its client
(``on_cluster``) instead of a worker count, in ``DASK_CASES`` only:

* ``robustpool-dask``: ``RobustPool(engine=DaskEngine(client))``, its size the cluster's
  threads (the engine's default): ``Pool.imap``, ``apply_async`` + ``get``;
* ``dask``: plain Dask on the same client, a Dask task per item or call:
  ``client.map(f, items, pure=False)`` with the results taken in order as they complete
  (``as_completed``; ``client.gather`` measured the same within the noise), and
  ``client.submit(f, x, pure=False)`` + ``result()``; it has no pool of its own to build or close;
* ``serial``: no pool, the same tasks in a plain loop in the owner (cpu_1ms only), so that
  cluster throughput can be read against cores x serial speed measured in the same run.

``imports`` are what a program imports to use a peer's pool (``from robustpool import
RobustPool``): the ``import`` case times them in a fresh interpreter, and ``load()`` runs them
before any case, so no other case times them (robustpool and ``concurrent.futures`` load their
pool classes lazily, and ``multiprocessing.Pool()`` imports ``multiprocessing.pool`` at its
first call). ``context()`` is the peer's own pool object, whose ``with`` block the ``exit``
case leaves.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import importlib.metadata
import importlib.util
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from robustpool import RobustExecutor, RobustPool, RobustThreadPool, RobustThreadPoolExecutor

# How long a graceful close may wait for workers before it gives up (the handle is then killed).
CLOSE_TIMEOUT = 10.0

ROBUSTPOOL = "robustpool"
STDLIB = "multiprocessing"
PPE = "ppe"
ROBUSTTHREADPOOL = "robustthreadpool"
THREADPOOL = "threadpool"  # multiprocessing.pool.ThreadPool
TPE = "tpe"  # concurrent.futures.ThreadPoolExecutor
ROBUSTDASK = "robustpool-dask"
DASK = "dask"  # plain Dask
SERIAL = "serial"  # no pool: the serial reference
DASK_GROUP = "dask"  # the group of the three above: ``--dask``
CALL_CASES = ("calls", "async_calls")  # the cases of robustpool's variants
# The cases of the Dask peers (the serial reference runs in cpu_1ms only).
DASK_CASES = ("tiny_imap_c1", "calls", "roundtrip", "cpu_1ms", "startup")
# The cases of the thread pools: those that mean on threads what they mean on processes.
THREAD_CASES = ("tiny_map", "tiny_imap_c1", *CALL_CASES, "startup")


class Waiter(Protocol):
    """The result of one submitted task."""

    def get(self) -> Any: ...


# One call f(x) issued: returns the peer's handle of it (a result, a future, an awaitable).
Issue = Callable[[Callable[[Any], Any], Any], Any]
# The value of an issued call, waiting for it.
Take = Callable[[Any], Any]

_get = operator.methodcaller("get")
_result = operator.methodcaller("result")


class _FutureWaiter:
    def __init__(self, future: Any) -> None:
        self._future = future

    def get(self) -> Any:
        return self._future.result()


class PoolHandle(abc.ABC):
    """A live pool of one peer, with ``workers`` processes (threads, for a thread pool)."""

    @abc.abstractmethod
    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        """All results in order; ``chunksize=None`` means the peer's own default."""

    @abc.abstractmethod
    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        """Results in order, as they come."""

    @abc.abstractmethod
    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        """Start one task."""

    def apply(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run one task and return its result."""
        return self.submit(func, *args).get()

    def caller(self) -> tuple[Issue, Take]:
        """The peer's single-call API: ``issue(f, x)`` starts ``f(x)``, ``take(h)`` waits for its value."""
        return self.submit, _get

    def async_caller(self) -> Issue | None:
        """``issue(f, x)`` returning an awaitable of ``f(x)``; called inside the running loop.
        None: the peer has no awaitable single call."""
        return None

    @abc.abstractmethod
    def context(self) -> AbstractContextManager[Any]:
        """The peer's own pool object, as ``with`` uses it (its ``__exit__`` is the peer's)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Graceful shutdown: let the workers exit and wait for them (bounded)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Hard shutdown after a failure or a timeout."""


class RobustPoolHandle(PoolHandle):
    def __init__(self, workers: int) -> None:
        from robustpool import RobustPool

        self._pool: RobustPool | RobustThreadPool = RobustPool(workers)

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        return self._pool.map(func, items, chunksize)

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        return self._pool.imap(func, items, chunksize)

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        return self._pool.apply_async(func, args)

    def caller(self) -> tuple[Issue, Take]:
        apply_async = self._pool.apply_async
        return (lambda f, x: apply_async(f, (x,))), _get

    def async_caller(self) -> Issue | None:
        apply_async = self._pool.apply_async
        return lambda f, x: apply_async(f, (x,))  # an AsyncResult is awaitable

    def context(self) -> AbstractContextManager[Any]:
        return self._pool

    def close(self) -> None:
        self._pool.close()
        self._pool.join(CLOSE_TIMEOUT)

    def kill(self) -> None:
        self._pool.terminate()


class RobustPoolSubmitHandle(RobustPoolHandle):
    """robustpool's ``RobustPool.submit``: a RobustFuture per call (awaitable too)."""

    def caller(self) -> tuple[Issue, Take]:
        return self._pool.submit, _result

    def async_caller(self) -> Issue | None:
        return self._pool.submit


class RobustExecutorHandle(PoolHandle):
    """robustpool's ``RobustExecutor``: the concurrent.futures API over the same engine."""

    def __init__(self, workers: int) -> None:
        from robustpool import RobustExecutor

        self._executor: RobustExecutor | RobustThreadPoolExecutor = RobustExecutor(workers)

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        return list(self._executor.map(func, items, chunksize=chunksize or 1))

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        return iter(self._executor.map(func, items, chunksize=chunksize))

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        return _FutureWaiter(self._executor.submit(func, *args))

    def caller(self) -> tuple[Issue, Take]:
        return self._executor.submit, _result

    def async_caller(self) -> Issue | None:
        return self._executor.submit  # a RobustFuture is awaitable

    def context(self) -> AbstractContextManager[Any]:
        return self._executor

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def kill(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class RobustDaskHandle(RobustPoolHandle):
    """robustpool on the run's Dask cluster: ``RobustPool(engine=DaskEngine(client))``."""

    def __init__(self, client: Any, workers: int) -> None:
        from robustpool import RobustPool
        from robustpool.dask import DaskEngine

        self._pool = RobustPool(engine=DaskEngine(client))  # as many processes as the cluster has threads


class DaskHandle(PoolHandle):
    """Plain Dask on the run's client: one Dask task per item or call, nothing to build or close."""

    def __init__(self, client: Any, workers: int) -> None:
        self._client = client

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        futures = self._client.map(func, items, pure=False)
        return list(self._client.gather(futures))

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        from distributed import as_completed

        futures = self._client.map(func, list(items), pure=False)
        index = {future.key: k for k, future in enumerate(futures)}
        return _in_order(as_completed(futures, with_results=True), index)  # type: ignore[no-untyped-call]

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        return _FutureWaiter(self._client.submit(func, *args, pure=False))

    def caller(self) -> tuple[Issue, Take]:
        submit = self._client.submit
        return (lambda f, x: submit(f, x, pure=False)), _result

    def context(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass  # the cluster and its client belong to the run

    def kill(self) -> None:
        pass


def _in_order(done: Iterable[tuple[Any, Any]], index: dict[Any, int]) -> Iterator[Any]:
    """The values of ``(future, value)`` pairs, as they complete, in the order of ``index``."""
    held: dict[int, Any] = {}
    following = 0
    for future, value in done:
        held[index[future.key]] = value
        while following in held:
            yield held.pop(following)
            following += 1


class _Done:
    def __init__(self, value: Any) -> None:
        self._value = value

    def get(self) -> Any:
        return self._value


class SerialHandle(PoolHandle):
    """No pool: every task runs at once in the owner, one after another."""

    def __init__(self, workers: int) -> None:
        pass

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        return [func(item) for item in items]

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        return map(func, items)

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        return _Done(func(*args))

    def context(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass

    def kill(self) -> None:
        pass


class MultiprocessingHandle(PoolHandle):
    def __init__(self, workers: int) -> None:
        import multiprocessing

        self._pool = multiprocessing.Pool(workers)

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        return self._pool.map(func, items, chunksize)

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        return self._pool.imap(func, items, chunksize)

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        return self._pool.apply_async(func, args)

    def caller(self) -> tuple[Issue, Take]:
        apply_async = self._pool.apply_async
        return (lambda f, x: apply_async(f, (x,))), _get

    def context(self) -> AbstractContextManager[Any]:
        return self._pool

    def close(self) -> None:
        # Pool.join() takes no timeout; the caller's deadline bounds it.
        self._pool.close()
        self._pool.join()

    def kill(self) -> None:
        self._pool.terminate()
        self._pool.join()


class ExecutorHandle(PoolHandle):
    """concurrent.futures.ProcessPoolExecutor."""

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self._executor: Any = ProcessPoolExecutor(workers)

    def _get(self) -> Any:
        return self._executor

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        return list(self._get().map(func, items, chunksize=chunksize or 1))

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        return iter(self._get().map(func, items, chunksize=chunksize))

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        return _FutureWaiter(self._get().submit(func, *args))

    def caller(self) -> tuple[Issue, Take]:
        return self._get().submit, _result

    def async_caller(self) -> Issue | None:
        import asyncio

        executor = self._get()
        run_in_executor = asyncio.get_running_loop().run_in_executor
        return lambda f, x: run_in_executor(executor, f, x)

    def context(self) -> AbstractContextManager[Any]:
        executor: AbstractContextManager[Any] = self._get()  # Executor.__exit__: shutdown(wait=True)
        return executor

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def kill(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class RobustThreadPoolHandle(RobustPoolHandle):
    """robustpool's ``RobustThreadPool``: RobustPool's API (and its handle's calls) over threads."""

    def __init__(self, workers: int) -> None:
        from robustpool import RobustThreadPool

        self._pool = RobustThreadPool(workers)


class RobustThreadExecutorHandle(RobustExecutorHandle):
    """robustpool's ``RobustThreadPoolExecutor``: RobustExecutor's API over threads."""

    def __init__(self, workers: int) -> None:
        from robustpool import RobustThreadPoolExecutor

        self._executor = RobustThreadPoolExecutor(workers)


class ThreadPoolHandle(MultiprocessingHandle):
    """``multiprocessing.pool.ThreadPool``: multiprocessing.Pool's API over threads."""

    def __init__(self, workers: int) -> None:
        from multiprocessing.pool import ThreadPool

        self._pool = ThreadPool(workers)


class ThreadExecutorHandle(ExecutorHandle):
    """``concurrent.futures.ThreadPoolExecutor``; awaited through ``loop.run_in_executor``, as PPE."""

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(workers)


class LokyHandle(ExecutorHandle):
    """loky's reusable executor, fetched again for every call (which replaces a broken one)."""

    def __init__(self, workers: int) -> None:
        import loky

        self._workers = workers
        self._loky = loky
        self._executor = loky.get_reusable_executor(max_workers=workers)

    def _get(self) -> Any:
        self._executor = self._loky.get_reusable_executor(max_workers=self._workers)
        return self._executor

    def kill(self) -> None:
        self._executor.shutdown(wait=True, kill_workers=True)


class PebbleHandle(PoolHandle):
    def __init__(self, workers: int) -> None:
        import pebble

        self._pool: Any = pebble.ProcessPool(max_workers=workers)  # Any: pebble is optional and partly untyped

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        return list(self._pool.map(func, items, chunksize=chunksize or 1).result())

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        return iter(self._pool.map(func, items, chunksize=chunksize).result())

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        return _FutureWaiter(self._pool.schedule(func, args=args))

    def caller(self) -> tuple[Issue, Take]:
        schedule = self._pool.schedule
        return (lambda f, x: schedule(f, args=(x,))), _result

    def async_caller(self) -> Issue | None:
        import asyncio

        schedule = self._pool.schedule
        loop = asyncio.get_running_loop()
        return lambda f, x: asyncio.wrap_future(schedule(f, args=(x,)), loop=loop)

    def context(self) -> AbstractContextManager[Any]:
        return self._pool  # type: ignore[no-any-return]

    def close(self) -> None:
        self._pool.close()
        self._pool.join(CLOSE_TIMEOUT)

    def kill(self) -> None:
        self._pool.stop()
        self._pool.join(CLOSE_TIMEOUT)


class MpireHandle(PoolHandle):
    def __init__(self, workers: int) -> None:
        import mpire.pool

        with contextlib.suppress(ImportError):
            import tqdm.std

            # mpire makes tqdm objects even without a progress bar, and tqdm's monitor thread
            # outlives the pool (so robustpool, built later in the same owner, could not fork).
            tqdm.std.tqdm.monitor_interval = 0
        self._pool: Any = mpire.pool.WorkerPool(n_jobs=workers, keep_alive=True)  # Any: mpire is optional

    def map(self, func: Callable[[Any], Any], items: Sequence[Any], chunksize: int | None) -> list[Any]:
        return list(self._pool.map(func, items, chunk_size=chunksize))

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
        return iter(self._pool.imap(func, items, chunk_size=chunksize))

    def submit(self, func: Callable[..., Any], *args: Any) -> Waiter:
        waiter: Waiter = self._pool.apply_async(func, args)
        return waiter

    def caller(self) -> tuple[Issue, Take]:
        apply_async = self._pool.apply_async
        return (lambda f, x: apply_async(f, (x,))), _get

    def context(self) -> AbstractContextManager[Any]:
        return self._pool  # type: ignore[no-any-return]

    def close(self) -> None:
        self._pool.stop_and_join()

    def kill(self) -> None:
        self._pool.terminate()


@dataclass(frozen=True)
class PeerSpec:
    """How to find and build one peer."""

    key: str  # the name used on the command line
    label: str  # the name shown in tables
    module: str  # imported to check the peer is installed
    distribution: str | None  # whose version to report; None for the standard library
    factory: Callable[[int], PoolHandle]
    default_chunksize: bool = True  # map() picks a multiprocessing-like chunksize by itself
    chunks: bool = True  # map() and imap() honour the chunksize (ThreadPoolExecutor.map ignores it)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The stdlib peer with the same API, the reference of the "x stdlib" column when it ran
    # in the case (else the case's own reference of the peer's kind, see cases.Case).
    twin: str = STDLIB
    variant_of: str | None = None  # another API of that peer: selected with it
    only_cases: tuple[str, ...] = ()  # empty: every case
    # Its workers are threads of the owner (no processes): compared with the other thread
    # pools for "x best", and with the case's thread reference when its twin did not run.
    threads: bool = False
    # Peers it should at least match: the detail of the per-call cases gives its ratio to
    # the faster of them, when all of them ran in the case.
    rivals: tuple[str, ...] = ()
    # What a program imports to use the pool: (module, name) is ``from module import name``,
    # (module, None) is ``import module``. Timed by the import case, run by load().
    imports: tuple[tuple[str, str | None], ...] = ()
    # A peer of a group runs only when asked for: by name, or by its group's option (--dask).
    group: str | None = None
    # Builds the peer on the run's Dask cluster, from its client (``factory`` is not used).
    on_cluster: Callable[[Any, int], PoolHandle] | None = None
    install: str | None = None  # what to pip install when it is missing (default: distribution)

    def missing(self) -> str | None:
        """Why the peer cannot run here, or None when it can."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            install = self.install or self.distribution
            hint = f"; pip install {install}" if install else ""
            return f"module {self.module!r} is not installed{hint}"
        return None

    def build(self, workers: int, client: Any = None) -> PoolHandle:
        """A new pool of the peer; one on the Dask cluster is built with the run's ``client``."""
        if self.on_cluster is None:
            return self.factory(workers)
        if client is None:
            raise RuntimeError(f"{self.label} runs on a Dask cluster, and this run started none")
        return self.on_cluster(client, workers)

    def load(self) -> None:
        """Import the peer's module and its ``imports`` now, so no case times an import."""
        importlib.import_module(self.module)
        for module, name in self.imports:
            loaded = importlib.import_module(module)
            if name is not None:
                getattr(loaded, name)  # a lazy attribute (robustpool's, concurrent.futures') imports here

    def import_statement(self) -> str:
        """``imports`` as Python source (one line), as the import case runs it."""
        return "; ".join(f"import {module}" if name is None else f"from {module} import {name}" for module, name in self.imports)

    def version(self) -> str:
        if self.distribution is None:
            return "stdlib"
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "?"


def _cluster_only(workers: int) -> PoolHandle:
    raise TypeError("this peer runs on the run's Dask cluster: build it with PeerSpec.build(workers, client)")


def mp_default_chunksize(n: int, workers: int) -> int:
    """multiprocessing.Pool.map's default: ``ceil(n / (4 * workers))``."""
    return max(1, math.ceil(n / (4 * workers)))


PEERS: dict[str, PeerSpec] = {
    spec.key: spec
    for spec in (
        PeerSpec(ROBUSTPOOL, "robustpool", "robustpool", "robustpool", RobustPoolHandle, imports=(("robustpool", "RobustPool"),)),
        PeerSpec(
            "robustpool-submit",
            "robustpool.submit",
            "robustpool",
            "robustpool",
            RobustPoolSubmitHandle,
            twin=PPE,
            variant_of=ROBUSTPOOL,
            only_cases=CALL_CASES,
        ),
        PeerSpec(
            "robustexecutor",
            "RobustExecutor",
            "robustpool",
            "robustpool",
            RobustExecutorHandle,
            twin=PPE,
            variant_of=ROBUSTPOOL,
            only_cases=CALL_CASES,
        ),
        PeerSpec(
            STDLIB,
            "mp.Pool",
            "multiprocessing",
            None,
            MultiprocessingHandle,
            # multiprocessing.Pool is a method of the default context that imports
            # multiprocessing.pool when first called: the import a program pays for the pool.
            imports=(("multiprocessing", "Pool"), ("multiprocessing.pool", None)),
        ),
        PeerSpec(
            PPE,
            "PPE",
            "concurrent.futures",
            None,
            ExecutorHandle,
            default_chunksize=False,
            imports=(("concurrent.futures", "ProcessPoolExecutor"),),
        ),
        PeerSpec(
            "loky",
            "loky",
            "loky",
            "loky",
            LokyHandle,
            default_chunksize=False,
            imports=(("loky", None),),
            notes=(
                "loky: get_reusable_executor(max_workers=2) fetched for every call (once per batch in the calls cases);"
                " it replaces a broken executor",
            ),
        ),
        PeerSpec(
            "pebble", "pebble", "pebble", "Pebble", PebbleHandle, default_chunksize=False, imports=(("pebble", "ProcessPool"),)
        ),
        PeerSpec(
            "mpire",
            "mpire",
            "mpire",
            "mpire",
            MpireHandle,
            imports=(("mpire", "WorkerPool"),),
            notes=(
                "mpire: WorkerPool(n_jobs=2, keep_alive=True) so workers persist between calls;"
                " tqdm's monitor thread disabled (tqdm.monitor_interval = 0), it outlived the pool",
            ),
        ),
        # The thread pools. Their modules are the ones defining the pools (robustpool and
        # concurrent.futures import them lazily), so load() imports them before any case
        # times a construction.
        PeerSpec(
            ROBUSTTHREADPOOL,
            "RobustThreadPool",
            "robustpool._threadpool",
            "robustpool",
            RobustThreadPoolHandle,
            twin=THREADPOOL,
            only_cases=THREAD_CASES,
            threads=True,
            rivals=(THREADPOOL, TPE),
        ),
        PeerSpec(
            "robustthreadexecutor",
            "RobustThreadPoolExecutor",
            "robustpool._threadpool",
            "robustpool",
            RobustThreadExecutorHandle,
            twin=TPE,
            variant_of=ROBUSTTHREADPOOL,
            only_cases=CALL_CASES,
            threads=True,
            rivals=(THREADPOOL, TPE),
        ),
        PeerSpec(
            THREADPOOL,
            "ThreadPool",
            "multiprocessing.pool",
            None,
            ThreadPoolHandle,
            twin=THREADPOOL,  # its own reference, as mp.Pool is the process pools'
            only_cases=THREAD_CASES,
            threads=True,
        ),
        PeerSpec(
            TPE,
            "TPE",
            "concurrent.futures.thread",
            None,
            ThreadExecutorHandle,
            default_chunksize=False,
            chunks=False,
            notes=(
                "TPE: ThreadPoolExecutor.map ignores chunksize (documented: it has no effect for threads),"
                " so in tiny_map it submits one future per item whatever chunksize it is given",
            ),
            twin=THREADPOOL,
            only_cases=THREAD_CASES,
            threads=True,
        ),
        # The Dask group: the two peers on the run's cluster, and the serial reference.
        PeerSpec(
            ROBUSTDASK,
            "robustpool-dask",
            "distributed",
            "robustpool",
            _cluster_only,
            twin=DASK,
            only_cases=DASK_CASES,
            imports=(("robustpool", "RobustPool"), ("robustpool.dask", "DaskEngine")),
            group=DASK_GROUP,
            on_cluster=RobustDaskHandle,
            install="'robustpool[dask]'",
        ),
        PeerSpec(
            DASK,
            "dask",
            "distributed",
            "distributed",
            _cluster_only,
            default_chunksize=False,
            chunks=False,
            twin=DASK,
            only_cases=DASK_CASES,
            imports=(("distributed", "Client"), ("distributed", "as_completed")),
            group=DASK_GROUP,
            on_cluster=DaskHandle,
        ),
        PeerSpec(SERIAL, "serial", "benchmarks.work", None, SerialHandle, only_cases=("cpu_1ms",), group=DASK_GROUP),
    )
}

ALIASES = {
    "mp": STDLIB,
    "mp.pool": STDLIB,
    "stdlib": STDLIB,
    "concurrent.futures": PPE,
    "processpoolexecutor": PPE,
    "robustpool.submit": "robustpool-submit",
    "robustpool-executor": "robustexecutor",
    "multiprocessing.pool.threadpool": THREADPOOL,
    "mp.threadpool": THREADPOOL,
    "threadpoolexecutor": TPE,
    "concurrent.futures.threadpoolexecutor": TPE,
    "robustthreadpool-executor": "robustthreadexecutor",
    "distributed": DASK,
    "robustpool.dask": ROBUSTDASK,
}


def resolve(name: str) -> PeerSpec:
    """The peer called ``name`` (its key, its table label, or a common alias)."""
    wanted = name.strip().lower()
    wanted = ALIASES.get(wanted, wanted)
    for spec in PEERS.values():
        if wanted in (spec.key, spec.label.lower()):
            return spec
    raise KeyError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")


def variants(spec: PeerSpec) -> list[PeerSpec]:
    """The other APIs of ``spec`` measured as peers of their own (selected with it)."""
    return [other for other in PEERS.values() if other.variant_of == spec.key]
