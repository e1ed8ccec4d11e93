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
from dataclasses import dataclass, field
from typing import Any, Protocol

# How long a graceful close may wait for workers before it gives up (the handle is then killed).
CLOSE_TIMEOUT = 10.0

ROBUSTPOOL = "robustpool"
STDLIB = "multiprocessing"
PPE = "ppe"
CALL_CASES = ("calls", "async_calls")  # the cases of robustpool's variants


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
    """A live pool of one peer, with ``workers`` processes."""

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
    def close(self) -> None:
        """Graceful shutdown: let the workers exit and wait for them (bounded)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Hard shutdown after a failure or a timeout."""


class RobustPoolHandle(PoolHandle):
    def __init__(self, workers: int) -> None:
        from robustpool import RobustPool

        self._pool = RobustPool(workers)

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

        self._executor = RobustExecutor(workers)

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

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def kill(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


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

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def kill(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


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
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The stdlib peer with the same API, the reference of the "x stdlib" column when it ran
    # in the case (else the case's own reference).
    twin: str = STDLIB
    variant_of: str | None = None  # another API of that peer: selected with it
    only_cases: tuple[str, ...] = ()  # empty: every case

    def missing(self) -> str | None:
        """Why the peer cannot run here, or None when it can."""
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            hint = f"; pip install {self.distribution}" if self.distribution else ""
            return f"module {self.module!r} is not installed{hint}"
        return None

    def load(self) -> None:
        """Import the peer's module now, so no case times an import."""
        importlib.import_module(self.module)

    def version(self) -> str:
        if self.distribution is None:
            return "stdlib"
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "?"


def mp_default_chunksize(n: int, workers: int) -> int:
    """multiprocessing.Pool.map's default: ``ceil(n / (4 * workers))``."""
    return max(1, math.ceil(n / (4 * workers)))


PEERS: dict[str, PeerSpec] = {
    spec.key: spec
    for spec in (
        PeerSpec(ROBUSTPOOL, "robustpool", "robustpool", "robustpool", RobustPoolHandle),
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
        PeerSpec(STDLIB, "mp.Pool", "multiprocessing", None, MultiprocessingHandle),
        PeerSpec(PPE, "PPE", "concurrent.futures", None, ExecutorHandle, default_chunksize=False),
        PeerSpec(
            "loky",
            "loky",
            "loky",
            "loky",
            LokyHandle,
            default_chunksize=False,
            notes=(
                "loky: get_reusable_executor(max_workers=2) fetched for every call (once per batch in the calls cases);"
                " it replaces a broken executor",
            ),
        ),
        PeerSpec("pebble", "pebble", "pebble", "Pebble", PebbleHandle, default_chunksize=False),
        PeerSpec(
            "mpire",
            "mpire",
            "mpire",
            "mpire",
            MpireHandle,
            notes=(
                "mpire: WorkerPool(n_jobs=2, keep_alive=True) so workers persist between calls;"
                " tqdm's monitor thread disabled (tqdm.monitor_interval = 0), it outlived the pool",
            ),
        ),
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
