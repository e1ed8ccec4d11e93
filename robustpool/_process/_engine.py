"""ProcessEngine: the ``Engine`` of supervised worker processes (see ``robustpool._engine``).

The thread-safe face of the process engine. It does what must happen on the caller's
thread (pickling a call's function and items, so a pickling error is that call's error) and
hands the rest to the dispatcher thread (``_loop.Loop``), which owns every worker, socket
and queue. Data flow of one chunk::

    caller --Chunk--> ProcessEngine.submit --pickle (make_tasks)--> Loop.submit --> workers
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._config import PoolConfig
from .._engine import Capability, Chunk, FuncRef, Job, ReleaseOnce, at_exit_once
from .._stats import PoolStats
from ._functions import FunctionTable
from ._loop import Loop, shutdown_all
from ._tasks import Task, make_tasks


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
        self._functions = FunctionTable()
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
        return self._functions.function(fn)

    def submit(self, chunks: Sequence[Chunk]) -> int:
        if len(chunks) == 1:  # one call's one chunk (apply_async, submit): the hot path
            chunk = chunks[0]
            tasks = make_tasks(chunk, self._functions.blob(chunk.func))
            chunk.job.flush()
        else:
            tasks = []
            for chunk in chunks:
                tasks += make_tasks(chunk, self._functions.blob(chunk.func))
            # Items that could not be pickled failed on their jobs here, on the caller's thread.
            for job in {chunk.job for chunk in chunks}:
                job.flush()
        if not tasks:
            return 0
        self._loop.submit(tasks)
        return len(tasks[0].payload) if len(tasks) == 1 else sum(len(t.payload) for t in tasks)

    def submit_tasks(self, tasks: Sequence[Task]) -> None:
        """Run tasks pickled elsewhere (a Dask node's: ``robustpool._dask._node``)."""
        self._loop.submit(list(tasks))

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
