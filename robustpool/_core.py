"""PoolCore: the lifecycle every facade shares, over one engine.

A facade (``RobustPool`` now; the executor, thread pool and scopes next) keeps its API and
delegates to the core what is the same for all of them: the pool's state (running, closed,
terminated), the registry of live ``imap`` streams, and the choreography of closing, joining
and terminating with streams still open:

* ``join`` after ``close`` first reads what the live streams still owe of their input (as
  the standard library's eager ``imap`` would have), then waits for the engine;
* ``terminate`` closes the streams first, holding results that arrive while the engine
  stops, then terminates the engine, waits, and cleans what arrived; it returns the cleanup
  errors and the facade decides how to raise them.

Only the facade's threads call it; the state is a plain attribute written under its lock.
"""

from __future__ import annotations

import enum
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import _forks
from ._calls import Mode, function_name
from ._config import PoolConfig
from ._engine import Capability, Chunk, Engine, EngineSpec, Job
from ._errors import TaskSerializationError
from ._jobs._iterators import IMapIterator
from ._jobs._single import FutureJob, RobustFuture
from ._jobs._stream import StreamJob
from ._progress import ProgressArg, make_bar


def refuse_unsupported(config: PoolConfig, capabilities: Capability, engine: str) -> None:
    """Raise ValueError, at the call, for a parameter the engine cannot enforce (a thread
    cannot be killed on timeout): silently ignoring it would be a broken promise."""
    needs = (
        ("task_timeout", config.task_timeout > 0, Capability.KILL_ON_TIMEOUT, "a running call cannot be stopped"),
        ("memory_limit", config.memory_limit is not None, Capability.MEMORY_LIMIT, "threads share one process's memory"),
        ("maxtasksperchild", config.maxtasksperchild is not None, Capability.RECYCLE, "threads are not recycled"),
        ("retries", config.retries > 0, Capability.DEATHS, "a task cannot kill its worker, so no death is retried"),
    )
    for name, asked, needed, why in needs:
        if asked and not capabilities & needed:
            raise ValueError(f"{name} needs workers that are processes; {engine} cannot enforce it ({why}): use RobustPool")


def check_engine(engine: object) -> EngineSpec | None:
    """``engine=`` of a facade: None (this machine's processes) or an engine spec such as
    ``robustpool.dask.DaskEngine``; anything else is refused at the call."""
    if engine is None:
        return None
    for name in ("capabilities", "label", "default_workers", "default_buffersize", "start"):
        if not hasattr(engine, name):
            kind = type(engine).__name__
            raise TypeError(f"engine must be an engine such as robustpool.dask.DaskEngine(client) or None, not {kind}")
    return engine  # type: ignore[return-value]


def start_engine(config: PoolConfig, spec: EngineSpec | None) -> Engine:
    """The engine of a new process pool: ``spec``'s, or this machine's processes."""
    if spec is not None:
        refuse_unsupported(config, spec.capabilities, spec.label)
        return spec.start(config)
    # Imported here, not at the top: the process engine brings cloudpickle, tblib and the
    # supervisor's modules, which `import robustpool` does not need until a pool starts.
    # A forkserver this pool needs boots meanwhile.
    from ._process import _forkserver

    _forkserver.prestart(config.start_method)
    from ._process._engine import ProcessEngine

    refuse_unsupported(config, ProcessEngine.capabilities, "the process engine")
    return ProcessEngine(config)


#: Every core alive in this process, and a function told of each new one: how
#: robustpool.testing reaches the pools a chaos run covers (None while no run is on).
live_cores: weakref.WeakSet[PoolCore] = weakref.WeakSet()
on_new_core: Callable[[PoolCore], None] | None = None


class State(enum.Enum):
    RUNNING = "running"
    CLOSED = "closed"
    TERMINATED = "terminated"


class PoolCore:
    """Lifecycle state + live streams + engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gen = _forks.generation
        self._lock = threading.Lock()
        self.state = State.RUNNING
        # Streams whose iterator a user can still reach (the iterator is the key: once it
        # is dropped, the stream is closed and forgotten here).
        self._streams: weakref.WeakKeyDictionary[object, StreamJob] = weakref.WeakKeyDictionary()
        live_cores.add(self)
        if on_new_core is not None:
            on_new_core(self)

    def check_owner(self) -> None:
        _forks.check(self.gen, "pool")

    def check_running(self) -> None:
        """Raise unless new work may be submitted."""
        _forks.check(self.gen, "pool")
        if self.state is not State.RUNNING:
            raise ValueError("Pool not running")
        broken = self.engine.broken
        if broken is not None and self.engine.finished:
            raise broken

    def track(self, iterator: object, job: StreamJob) -> None:
        self._streams[iterator] = job

    def start(
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
        """Hand a call's items to the engine as chunks of ``chunksize``; a function that
        cannot be pickled fails every item on the job."""
        engine = self.engine
        try:
            ref = engine.function(func)
        except TaskSerializationError as exc:
            for k in range(len(items)):
                job.fail(k, exc)
            job.flush()
            return
        if len(items) <= chunksize:  # one chunk (every apply_async and submit)
            # A caller's list is copied, as the slices below are: a task keeps its items to
            # run them again after a death, and the caller may reuse the list meanwhile.
            whole = items[:] if type(items) is list else items
            engine.submit((Chunk(job, ref, mode, 0, whole, timeout, indexed, stream),))
            return
        # Chunks go to the engine in batches of doubling size (1, 2, 4, ...): workers start
        # on the first chunk while the rest are still being pickled, for a handful of
        # wake-ups whatever the number of chunks.
        batch: list[Chunk] = []
        sent = 0
        for start in range(0, len(items), chunksize):
            batch.append(Chunk(job, ref, mode, start, items[start : start + chunksize], timeout, indexed, stream))
            if len(batch) > sent:
                engine.submit(batch)
                sent += len(batch)
                batch = []
        if batch:
            engine.submit(batch)

    def stream(
        self,
        func: Callable[..., Any],
        mode: Mode,
        iterable: Iterable[Any],
        chunksize: int,
        window: int,
        ordered: bool,
        cleanup: Callable[[Any], object] | None,
        close_timeout: float,
        timeout: float,
        progress: ProgressArg = None,
        total: int | None = None,
    ) -> tuple[IMapIterator[Any], StreamJob]:
        """A lazy stream of ``func`` over ``iterable`` (imap, executor map), tracked here
        so join and terminate reach it; returns its iterator and job. ``progress``: the
        bar asked for (see ``_progress``), of ``total`` items if that is known."""
        bar = make_bar(progress, total, function_name(func))
        try:
            ref = self.engine.function(func)
            job = StreamJob(self.engine, ref, mode, iterable, chunksize, window, ordered, cleanup, close_timeout, timeout, bar)
        except BaseException:
            if bar is not None:
                bar.close()
            raise
        it: IMapIterator[Any] = IMapIterator(job)
        self.track(it, job)
        return it, job

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> RobustFuture[Any]:
        """``fn(*args, **kwargs)`` as a future whose cancel() stops it (see RobustFuture)."""
        future: RobustFuture[Any] = RobustFuture()
        self.start(FutureJob(future, self.engine), fn, Mode.APPLY, ((args, kwargs),), 1, False, timeout)
        return future

    def close_streams(self) -> list[Exception]:
        """Close every live stream without waiting (cleanup errors are logged and returned)."""
        errors: list[Exception] = []
        for job in list(self._streams.values()):
            errors += job.close_now()
        return errors

    def close(self) -> None:
        self.check_owner()
        with self._lock:
            if self.state is not State.RUNNING:
                return
            self.state = State.CLOSED
        self.engine.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the engine to stop after ``close()`` or ``terminate()``."""
        self.check_owner()
        if self.state is State.RUNNING:
            raise ValueError("Pool is still running")
        if self.state is State.CLOSED:
            # Lazy streams still owe their input: read it now -- but only for iterators the
            # caller can still reach. One dropped inside a reference cycle is collected
            # (and closed) first, so a dropped endless input is never read forever. The
            # collection runs only when some stream owes input: a full collection costs
            # the owner's whole heap (100 ms and more in a big program), on every join.
            if any(job.owes_input for job in list(self._streams.values())):
                gc.collect()
            deadline = None if timeout is None else time.monotonic() + timeout
            for job in list(self._streams.values()):  # after the collection: the ones still reachable
                job.feed(everything=True, deadline=deadline)
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
        return self.engine.join(timeout)

    def terminate(self) -> list[Exception]:
        """Stop now; returns the cleanup errors (already logged), for the facade to raise."""
        self.check_owner()
        with self._lock:
            if self.state is State.TERMINATED and self.engine.finished:
                return []
            self.state = State.TERMINATED
        # Streams close first, so results the engine still reads from the workers while it
        # stops go to their cleanup, not into a buffer nobody reads.
        errors: list[Exception] = []
        streams = list(self._streams.values())
        for job in streams:
            job.hold_late()  # results drained while stopping are cleaned below, here
            errors += job.close_now()
        self.engine.terminate()
        self.engine.join()
        for job in streams:
            errors += job.release_late()
        return errors

    def abandon(self) -> None:
        """The facade was collected while running: stop without waiting (no cleanup)."""
        if self.gen != _forks.generation or self.state is State.TERMINATED or self.engine.finished:
            return
        self.state = State.TERMINATED
        self.engine.terminate()
