"""ProcessEngine: the ``Engine`` of supervised worker processes (see ``robustpool._engine``).

The thread-safe face of the process engine. It does what must happen on the caller's
thread (pickling a call's function and items, so a pickling error is that call's error) and
hands the rest to the dispatcher thread (``_loop.Loop``), which owns every worker, socket
and queue. Data flow of one chunk::

    caller --Chunk--> ProcessEngine.submit --pickle (make_tasks)--> Loop.submit --> workers
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from types import FunctionType
from typing import Any

from .._calls import function_name
from .._config import PoolConfig
from .._engine import Capability, Chunk, FuncRef, Job, ReleaseOnce, at_exit_once
from .._stats import PoolStats
from ._loop import Loop, shutdown_all
from ._serialize import pickled_by_name
from ._tasks import make_tasks, pickle_function

_FUNC_MEMO = 256  # functions remembered by their pickle, so equal ones share a handle


def _still_named(fn: FunctionType) -> bool:
    """Whether a function once pickled by name still is (its name still leads to it): a
    module attribute looked up directly (most functions), the full walk otherwise."""
    module = sys.modules.get(fn.__module__)
    if module is not None and fn.__module__ != "__main__" and module.__dict__.get(fn.__qualname__) is fn:
        return True
    return pickled_by_name(fn)


class ProcessEngine:
    """Runs chunks in supervised worker processes: every capability of ``_engine``."""

    capabilities = (
        Capability.KILL_ON_TIMEOUT
        | Capability.MEMORY_LIMIT
        | Capability.RECYCLE
        | Capability.PIDS
        | Capability.STOP_RUNNING
        | Capability.DEATHS
    )

    def __init__(self, config: PoolConfig) -> None:
        self._config = config
        # Guarded by _lock: the function memo (pickle -> handle id and name) and each
        # handle's pickle. No function is kept alive by them (a bound method's object, a
        # closure's data): each call's FuncRef holds its function for as long as it runs.
        self._lock = threading.Lock()
        self._by_blob: dict[bytes, tuple[int, str]] = {}
        self._blobs: dict[int, bytes] = {}
        # Functions pickled by name, by identity, with their handle: their pickle is known
        # without pickling them again (written under _lock; read without it, a dict
        # lookup). These are held strongly, but each is reachable from its module anyway
        # (that is what pickling by name means), and there are at most _FUNC_MEMO.
        self._by_fn: dict[Callable[..., Any], FuncRef] = {}
        at_exit_once(shutdown_all)  # terminate every live pool at interpreter exit (bounded)
        self._loop = Loop(config)

    @property
    def capacity(self) -> int:
        return self._config.processes

    @property
    def broken(self) -> BaseException | None:
        return self._loop.broken

    @property
    def finished(self) -> bool:
        return self._loop.finished

    @property
    def supervisor_pid(self) -> int:
        return self._loop.supervisor_pid

    def function(self, fn: Callable[..., Any]) -> FuncRef:
        """Pickle ``fn`` (raising TaskSerializationError if it cannot be), reusing the
        handle of an identical earlier pickle so a worker unpickles a function once, not
        once per ``apply_async``."""
        if type(fn) is FunctionType:
            ref = self._by_fn.get(fn)
            if ref is not None and _still_named(fn):
                return ref
        blob = pickle_function(fn)
        with self._lock:
            known = self._by_blob.get(blob)
            if known is None:
                if len(self._by_blob) >= _FUNC_MEMO:
                    old_id, _ = self._by_blob.pop(next(iter(self._by_blob)))
                    self._blobs.pop(old_id, None)
                known = (FuncRef.new_id(), function_name(fn))
                self._by_blob[blob] = known
                self._blobs[known[0]] = blob
            ref = FuncRef(known[0], known[1], fn)
            if pickled_by_name(fn):
                if len(self._by_fn) >= _FUNC_MEMO:
                    del self._by_fn[next(iter(self._by_fn))]
                self._by_fn[fn] = ref
        return ref

    def _blob(self, func: FuncRef) -> bytes:
        blob = self._blobs.get(func.func_id)  # one dict read, atomic: no lock needed to read
        return blob if blob is not None else pickle_function(func.fn)  # forgotten since: again

    def submit(self, chunks: Sequence[Chunk]) -> int:
        if len(chunks) == 1:  # one call's one chunk (apply_async, submit): the hot path
            chunk = chunks[0]
            tasks = make_tasks(chunk, self._blob(chunk.func))
            chunk.job.flush()
        else:
            tasks = []
            for chunk in chunks:
                tasks += make_tasks(chunk, self._blob(chunk.func))
            # Items that could not be pickled failed on their jobs here, on the caller's thread.
            for job in {chunk.job for chunk in chunks}:
                job.flush()
        if not tasks:
            return 0
        self._loop.submit(tasks)
        return len(tasks[0].payload) if len(tasks) == 1 else sum(len(t.payload) for t in tasks)

    def cancel(self, job: Job) -> None:
        self._loop.cancel(job)

    def cancel_all(self) -> None:
        self._loop.cancel_all()

    def kill(self, job: Job) -> None:
        self._loop.kill(job)

    def kill_idle_worker(self, killed: Callable[[int], None]) -> None:
        """Kill a worker between tasks (``robustpool.testing``); see ``Loop.kill_idle_worker``."""
        self._loop.kill_idle_worker(killed)

    def batch_size(self, func: FuncRef, ahead: int) -> int:
        return self._loop.batch_size(func.func_id, ahead)

    def hold(self) -> ReleaseOnce:
        self._loop.hold()
        return ReleaseOnce(self._loop.release)

    def close(self) -> None:
        self._loop.close()

    def terminate(self) -> None:
        self._loop.terminate()

    def join(self, timeout: float | None = None) -> bool:
        return self._loop.join(timeout)

    def stats(self) -> PoolStats:
        return self._loop.stats()

    def pids(self) -> list[int]:
        return self._loop.pids()
