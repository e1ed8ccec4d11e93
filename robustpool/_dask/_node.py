"""What runs on each Dask worker for a robustpool pool: its own supervised process engine,
and the Dask task that hands that engine one chunk.

Data flow of one chunk (the owner's side is ``_owner``)::

    owner --Dask task run_chunk(pool, key, header, blobs)--> a thread of the Dask worker
      --Task--> this Dask worker's ProcessEngine (a supervisor and its worker processes)
      --RESULT payloads unopened, deaths and timeouts as errors--> NodeJob
      --the outcomes, as bytes and numbers--> Dask --> owner, which unpickles them

Nothing of the user's is unpickled in the Dask worker. Arguments travel as one pickle per
item, each wrapped (:class:`Pickled`) so that only the worker process opens it; results come
back as the worker process's own bytes (``RelayJob``). A task that crashes its process, even
while its arguments or its result are unpickled, takes down that process only: the
supervisor reports it, its item fails with ``WorkerLostError`` (or runs again, with
``retries``), the process is replaced, and the Dask worker and every other task on it go on.

One :class:`NodePool` per pool and Dask worker, registered by the owner as a worker plugin
under the pool's name (so a worker that joins later gets one too) and torn down when the
pool stops. Its state (the engine, the chunks running, the keys killed early) is guarded by
its lock: chunks arrive on the Dask worker's threads, kills on its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from distributed import WorkerPlugin, get_worker

from .._calls import Mode
from .._config import PoolConfig
from .._engine import Chunk, FuncRef
from .._errors import PoolTerminatedError
from .._process import _serialize as ser
from .._process._control import TERM_GRACE
from .._process._engine import ProcessEngine
from .._process._relay import RelayJob
from .._process._tasks import make_tasks
from .._stats import PoolStats

log = logging.getLogger("robustpool")

# The kinds of outcome a chunk reports (the first field of each; see NodeJob).
FRAME = 0  # (FRAME, index, count, status, body, spent): a RESULT payload, unopened
ERROR = 1  # (ERROR, index, encoded exception): a death, a timeout, a lost engine
DROP = 2  # (DROP, index, count): never ran (the chunk was killed)

_KILLED_KEPT = 4096  # keys killed before their chunk arrived, remembered (oldest forgotten)
_WAIT_TURN_S = 1.0  # a chunk's wait checks this often that its engine still runs


class Pickled:
    """One argument item as the owner pickled it: it pickles as that pickle, so the worker
    process that unpickles the chunk gets the item itself, and this Dask worker never
    opens it. Its repr stands in where an error names the item; the owner, which has the
    item, names it again (``_owner``)."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Any, ...]:
        return (pickle.loads, (self.blob,))

    def __repr__(self) -> str:
        return "..."


def lease_key(name: str) -> list[str]:
    """Where a pool's lease lives in the scheduler's metadata (``Client.set_metadata``)."""
    return ["robustpool", name]


def _elsewhere(*args: object, **kwargs: object) -> None:  # pragma: no cover - never called
    raise RuntimeError("robustpool: a Dask node runs functions as pickled by the owner only")


class NodeJob(RelayJob):
    """The owner-side state of one chunk on this Dask worker: its outcomes, in arrival order.

    Written on the engine's dispatcher thread (and by ``kill`` on the event loop, under the
    pool's lock); read by the chunk's Dask thread once ``done`` is set."""

    cancellable = True

    def __init__(self, count: int) -> None:
        self.outcomes: list[tuple[Any, ...]] = []
        self._left = count
        self.killed = False
        self.done = threading.Event()

    def claim(self) -> bool:
        return not self.killed

    def relay(self, index: int, count: int, status: int, body: bytes, spent: float) -> None:
        self.outcomes.append((FRAME, index, count, status, body, spent))
        self._left -= count

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        # Not reached (results come through relay); if it were, the values go as a frame.
        from .._process._wire import Status

        self.relay(index, len(values), Status.OK, ser.dumps(list(values)), 0.0)

    def fail(self, index: int, exc: BaseException) -> None:
        self.outcomes.append((ERROR, index, ser.encode_exception(exc)))
        self._left -= 1

    def drop(self, index: int, count: int) -> None:
        self.outcomes.append((DROP, index, count))
        self._left -= count

    def flush(self) -> None:
        if self._left <= 0:
            self.done.set()

    def kill(self) -> None:
        self.killed = True
        self.done.set()


class NodePool(WorkerPlugin):
    """One pool's process engine on one Dask worker (see the module docstring).

    Pickled by Dask to every worker: only the pool's name and its configuration travel,
    the configuration pickled by the owner (its initializer is the user's function)."""

    def __init__(self, name: str, config: bytes, owner_timeout: float) -> None:
        self.name = name
        self._config = config
        self._owner_timeout = owner_timeout
        self._lock = threading.Lock()
        self._engine: ProcessEngine | None = None
        self._address = ""
        self._jobs: dict[str, NodeJob] = {}
        self._killed: OrderedDict[str, None] = OrderedDict()
        self._stopped = False

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "config": self._config, "owner_timeout": self._owner_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["config"], state["owner_timeout"])  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        """Start this worker's engine: as many processes as the Dask worker has threads,
        each thread running one chunk at a time."""
        config: PoolConfig = pickle.loads(self._config)
        config = replace(config, processes=max(1, int(worker.state.nthreads)))
        from .._process import _forkserver

        _forkserver.prestart(config.start_method)
        with self._lock:
            self._address = str(worker.address)
            self._engine = ProcessEngine(config)
        # Called on the Dask worker's event loop: the watch runs there, beside Dask's own.
        asyncio.get_running_loop().create_task(self._watch(worker))

    async def _watch(self, worker: Any) -> None:
        """Stop the pool everywhere once its owner is gone: the scheduler keeps a worker
        plugin (and installs it on every Dask worker that starts later) until someone
        unregisters it, and an owner killed with ``kill -9`` never does. The owner renews a
        lease in the scheduler's metadata; a lease that has not changed for
        ``owner_timeout`` (measured on this machine's clock: no clocks are compared) means
        the owner is gone, and this worker unregisters the plugin for the whole cluster."""
        seen: object = None
        changed = time.monotonic()
        while True:
            await asyncio.sleep(self._owner_timeout / 4)
            with self._lock:
                if self._stopped:
                    return
            try:
                lease = await worker.scheduler.get_metadata(keys=lease_key(self.name), default=None)
            except Exception:  # the scheduler is out of reach: Dask itself deals with that
                continue
            now = time.monotonic()
            if lease != seen:
                seen, changed = lease, now
                continue
            if now - changed < self._owner_timeout:
                continue
            # Every worker sees the lapse at about the same time; one unregistering is
            # enough (the scheduler logs an error for each later one), so each waits a
            # moment first and stands down if the plugin's teardown came meanwhile.
            await asyncio.sleep(random.uniform(0, self._owner_timeout / 4))
            with self._lock:
                if self._stopped:
                    return
            log.warning(
                "robustpool: pool %s's owner renewed nothing for %.0f s: stopping its engines on every Dask worker",
                self.name,
                now - changed,
            )
            with contextlib.suppress(Exception):  # another worker may have done it first
                await worker.scheduler.unregister_worker_plugin(name=self.name)
            return

    def teardown(self, worker: Any) -> None:
        """The pool stopped (or this Dask worker is closing): stop the engine, bounded."""
        with self._lock:
            engine, self._engine = self._engine, None
            self._stopped = True
        if engine is not None:
            engine.terminate()
            if not engine.join(5 * TERM_GRACE):
                log.warning("robustpool: pool %s on Dask worker %s did not stop in time", self.name, self._address)

    def kill(self, keys: Sequence[str]) -> None:
        """Stop these chunks: the running ones' processes are killed (``Engine.kill``), and
        a key whose chunk has not arrived yet is remembered, so it never starts."""
        with self._lock:
            engine = self._engine
            found = []
            for key in keys:
                job = self._jobs.get(key)
                if job is None:
                    self._killed[key] = None
                    if len(self._killed) > _KILLED_KEPT:
                        self._killed.popitem(last=False)
                else:
                    found.append(job)
        for job in found:
            if engine is not None:
                engine.kill(job)
            job.kill()

    def run(self, key: str, header: tuple[Any, ...], blobs: Sequence[bytes]) -> tuple[Any, ...]:
        """Run one chunk on this worker's engine and wait for every item's outcome."""
        func_id, func_name, blob, mode, start, timeout, indexed, stream, item_deadline = header
        job = NodeJob(len(blobs))
        with self._lock:
            engine = self._engine
            if key in self._killed:
                del self._killed[key]
                return self._reply(job, 0.0, engine)
            if engine is None:
                error = PoolTerminatedError(f"the pool's engine on Dask worker {self._address} has stopped")
                for k in range(len(blobs)):
                    job.fail(start + k, error)
                return self._reply(job, 0.0, engine)
            self._jobs[key] = job
        began = time.perf_counter()
        try:
            ref = FuncRef(func_id, func_name, _elsewhere)
            items = [Pickled(b) for b in blobs]
            chunk = Chunk(job, ref, Mode(mode), start, items, timeout, indexed, stream, item_deadline)
            engine.submit_tasks(make_tasks(chunk, blob))
            while not job.done.wait(_WAIT_TURN_S):
                if engine.finished:  # it failed every item it had before it stopped; this is a backstop
                    job.done.wait(TERM_GRACE)
                    break
        finally:
            with self._lock:
                self._jobs.pop(key, None)
        return self._reply(job, time.perf_counter() - began, engine)

    def _reply(self, job: NodeJob, elapsed: float, engine: ProcessEngine | None) -> tuple[Any, ...]:
        """What the owner gets: the outcomes, the seconds the chunk took here, this worker's
        address, and its engine's statistics (the owner sums them over the workers)."""
        stats: PoolStats | None = engine.stats() if engine is not None else None
        return (list(job.outcomes), elapsed, self._address, job.killed, stats)


def _node(name: str) -> NodePool:
    worker = get_worker()
    node = worker.plugins.get(name)
    if not isinstance(node, NodePool):
        raise RuntimeError(f"robustpool: pool {name} has no engine on Dask worker {worker.address} (it has stopped)")
    return node


def run_chunk(name: str, key: str, header: tuple[Any, ...], blobs: Sequence[bytes]) -> tuple[Any, ...]:
    """The Dask task of one chunk (see the module docstring)."""
    return _node(name).run(key, header, blobs)


def kill_chunks(name: str, keys: Sequence[str], dask_worker: Any = None) -> None:
    """Run by the owner on every Dask worker (``Client.run``): stop these chunks of pool ``name``."""
    node = dask_worker.plugins.get(name) if dask_worker is not None else None
    if isinstance(node, NodePool):
        node.kill(keys)
