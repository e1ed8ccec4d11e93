"""DaskRunner: the ``Engine`` (see ``robustpool._engine``) of a pool that runs on Dask.

A facade hands it chunks as it would the process engine. It pickles each item on the
caller's thread (so an unpicklable argument is that call's error, at the call), keeps the
chunks in a queue of its own, and sends them to the cluster a few at a time, as Dask tasks
of ``_node.run_chunk``; on each Dask worker a process engine of robustpool's runs them (see
``_node``). Data flow::

    caller --Chunk--> DaskRunner.submit --pickle each item--> the runner's thread
      --merge small neighbours, claim--> Client.submit(run_chunk) --> Dask worker
      <-- outcomes (RESULT payloads unopened, errors) <-- Client.gather (asynchronous)
      --unpickle, report--> Job

Why a queue of its own rather than handing Dask everything at once: a chunk is claimed (its
job learns it started) when it is handed to Dask, and a handed chunk runs to the end (Dask
cannot stop a running task; ``kill`` does, through the node); so the runner hands over only
about as many chunks as the cluster runs at once, and ``cancel`` drops the rest, exactly as
the process engine drops what it has not sent. Tiny items of an ``imap`` come as chunks of
one item; the runner merges neighbours into one Dask task of about ``_BATCH_TARGET_S`` of
work (learnt from the results), since a Dask task costs milliseconds and an item may cost
microseconds; every item keeps its own outcome, timeout and attribution inside it.

The runner's thread owns every mutable field below but the inbox: facades post calls to it
(``_post``), Dask's callback thread posts finished keys, and the thread never waits on Dask:
gathers, cancels and kills run as coroutines on the client's event loop and post back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import queue
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._config import PoolConfig
from .._engine import Capability, Chunk, FuncRef, Job, ReleaseOnce, at_exit_once
from .._errors import (
    InitializerError,
    PoolTerminatedError,
    RobustPoolError,
    TaskSerializationError,
    TaskTimeoutError,
    WorkerLostError,
)
from .._process import _decode as decode
from .._process import _serialize as ser
from .._process._functions import FunctionTable
from .._process._schedule import Estimates
from .._process._tasks import Task, fail_unpicklable
from .._process._wire import ProtocolError
from .._stats import PoolStats, WorkerStats
from . import _node

log = logging.getLogger("robustpool")

_BATCH_TARGET_S = 0.1  # a Dask task of merged items carries about this much work
_MAX_BATCH = 4096  # most items merged into one Dask task
_FIRST_BATCH = 8  # items merged before a function's timing is known
_DEEP = 16  # Dask tasks per pool worker that chunks no one can cancel may keep on the cluster
_STOP_S = 10.0  # the most the runner waits for Dask to drop the pool's engines when it stops
_IDLE_TURN_S = 1.0  # the runner's thread looks at the client this often when nothing happens
_RENEWALS = 6  # the lease is renewed this many times per owner_timeout

_pool_ids = itertools.count(1)
_live: weakref.WeakSet[DaskRunner] = weakref.WeakSet()  # runners not finished (for the exit below)


def _stop_all() -> None:
    """At interpreter exit: terminate every pool still on Dask, so its engines on the Dask
    workers stop with it (they would otherwise outlive this process); bounded."""
    runners = [r for r in list(_live) if not r.finished]
    for runner in runners:
        runner.terminate()
    for runner in runners:
        runner.join(_STOP_S)


@dataclass(eq=False, slots=True)
class Parcel:
    """Consecutive items of one job, pickled one by one, waiting to go to Dask."""

    chunk: Chunk
    blobs: list[bytes]


@dataclass(eq=False, slots=True)
class Flight:
    """One Dask task of the pool: ``task`` (the items, to unpickle and describe their
    outcomes) and its Dask future; ``stopped`` once its job was killed or the pool
    terminated (its outcomes are then ignored)."""

    key: str
    task: Task
    future: Any
    stopped: bool = False
    reported: set[int] = field(default_factory=set)  # indices whose outcome was reported


def _retell(exc: BaseException, t: Task, k: int, host: str | None) -> BaseException:
    """``exc`` naming item ``k`` of ``t`` and the Dask worker ``host``: an error made on a
    Dask node names its item as the node saw it (``...``: the node never unpickles items),
    and one made here (a lost chunk) names none; say both here, where the item is known."""
    task = t.describe(k)
    if isinstance(exc, WorkerLostError):
        fresh = WorkerLostError(exc.pid, exc.exitcode, t.index(k), task, exc.phase, exc.attempts, exc.last_rss, exc.reason, host)
        fresh.__cause__ = exc.__cause__
        return fresh
    if isinstance(exc, TaskTimeoutError):
        return TaskTimeoutError(exc.timeout, exc.elapsed, exc.task_index, task, exc.pid, host)
    if isinstance(exc, TaskSerializationError):
        exc.describe(exc.task_index, task)
    return exc


class DaskRunner:
    """Runs chunks on a Dask cluster, each Dask worker with robustpool's process engine."""

    capabilities = (
        Capability.KILL_ON_TIMEOUT | Capability.MEMORY_LIMIT | Capability.RECYCLE | Capability.STOP_RUNNING | Capability.DEATHS
    )

    def __init__(self, client: Any, config: PoolConfig, threads: int, options: dict[str, Any], owner_timeout: float) -> None:
        self._client = client
        self._config = config
        # The pool's name: its worker plugin's, and the prefix of its Dask keys.
        self.name = f"robustpool-{next(_pool_ids)}-{uuid.uuid4().hex[:12]}"
        self._options = options  # Client.submit's workers=, resources=, ...
        self._functions = FunctionTable()
        self._estimates = Estimates()
        # How many Dask tasks the pool keeps on the cluster: ``processes`` when that is
        # fewer than the cluster's threads (a cap the user asked for); otherwise twice the
        # pool's size, so each Dask thread has its next chunk waiting behind the running one.
        self._limit = config.processes if config.processes < threads else 2 * config.processes
        # Chunks of jobs that cannot be cancelled (apply_async, map_async) lose nothing by
        # waiting in Dask's queue rather than in ours, and single calls cost Dask's round
        # trip each: they may fill the cluster deeper, to hide it (not past a cap asked for).
        self._deep = self._limit if config.processes < threads else _DEEP * config.processes
        self._inbox: queue.SimpleQueue[Callable[[], None] | str] = queue.SimpleQueue()
        # Owned by the runner's thread:
        self._pending: deque[Parcel] = deque()
        self._flights: dict[str, Flight] = {}
        self._touched: set[Job] = set()
        self._closing = False
        self._terminating = False
        self._keys = itertools.count(1)
        self._done = self._failed = self._timed_out = 0
        self._nodes: dict[str, PoolStats] = {}  # the last statistics of each Dask worker's engine
        self._fetching: set[str] = set()
        # Written by any thread, under _lock:
        self._lock = threading.Lock()
        self._holds = 0
        self._stopped = False  # the thread has stopped: _post runs what it is given at once
        self.broken: BaseException | None = None
        self._finished = threading.Event()
        blob = ser.dumps(config)  # its initializer is the user's: pickled as functions are
        # The lease: renewed while this runner lives; the engines on the Dask workers stop
        # themselves once it has not changed for owner_timeout (see _node.NodePool._watch).
        self._owner_timeout = owner_timeout
        self._lease = 0
        self._renewed = time.monotonic()
        client.set_metadata(_node.lease_key(self.name), self._lease)
        client.register_plugin(_node.NodePool(self.name, blob, owner_timeout), name=self.name)
        self._thread = threading.Thread(target=self._run, name=f"robustpool-dask-{self.name}", daemon=True)
        self._thread.start()
        _live.add(self)
        at_exit_once(_stop_all)

    # -- the Engine protocol, on the caller's thread --

    @property
    def capacity(self) -> int:
        return self._config.processes

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def function(self, fn: Callable[..., Any]) -> FuncRef:
        return self._functions.function(fn)

    def submit(self, chunks: Sequence[Chunk]) -> int:
        parcels: list[Parcel] = []
        size = 0
        for chunk in chunks:
            for parcel in _pickle_each(chunk):
                parcels.append(parcel)
                size += sum(map(len, parcel.blobs))
        for job in {chunk.job for chunk in chunks}:
            job.flush()  # items that could not be pickled failed here, on the caller's thread
        if parcels:
            self._post(lambda: self._queue(parcels))
        return size

    def cancel(self, job: Job) -> None:
        self._post(lambda: self._drop_pending(lambda p: p.chunk.job is job))

    def cancel_all(self) -> None:
        done = threading.Event()

        def drop_all() -> None:
            self._drop_pending(lambda p: p.chunk.job.cancellable)
            done.set()

        self._post(drop_all)
        if not self._finished.is_set():
            done.wait(_IDLE_TURN_S)

    def kill(self, job: Job) -> None:
        self._post(lambda: self._stop_job(job))

    def batch_size(self, func: FuncRef, ahead: int) -> int:
        return 1  # the runner merges neighbours itself, when it hands them to Dask

    def hold(self) -> ReleaseOnce:
        with self._lock:
            self._holds += 1
        return ReleaseOnce(self._release)

    def _release(self) -> None:
        with self._lock:
            self._holds = max(0, self._holds - 1)
        self._post(lambda: None)

    def close(self) -> None:
        self._post(self._begin_close)

    def terminate(self) -> None:
        self._post(self._begin_terminate)

    def join(self, timeout: float | None = None) -> bool:
        if not self._finished.wait(timeout):
            return False
        if threading.current_thread() is not self._thread:
            self._thread.join(1.0)
        return True

    def stats(self) -> PoolStats:
        nodes = list(self._nodes.values())
        replaced: dict[str, int] = {}
        for node in nodes:
            for why, n in node.replaced:
                replaced[why] = replaced.get(why, 0) + n
        workers: tuple[WorkerStats, ...] = tuple(w for node in nodes for w in node.workers)
        return PoolStats(
            sum(node.workers_alive for node in nodes),
            self._done,
            self._failed,
            sum(node.tasks_retried for node in nodes),
            self._timed_out,
            sum(replaced.values()),
            tuple(sorted(replaced.items())),
            workers,
        )

    def pids(self) -> list[int]:
        return []  # the workers are processes on the Dask workers' machines

    # -- the runner's thread --

    def _post(self, fn: Callable[[], None] | str) -> None:
        with self._lock:
            if not self._stopped:
                self._inbox.put(fn)
                return
        # The thread has stopped: what it would have done (fail the items of a late
        # submit with the reason it stopped) is done here, at once.
        if not isinstance(fn, str):
            fn()
            self._flush()

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._inbox.get(timeout=min(_IDLE_TURN_S, self._owner_timeout / _RENEWALS))
                except queue.Empty:
                    item = None
                finished: list[str] = []
                while item is not None:
                    if isinstance(item, str):
                        finished.append(item)
                    else:
                        item()
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        item = None
                if finished:
                    self._on_finished(finished)
                self._check_client()
                self._renew_lease()
                if self.broken is not None:
                    self._fail_everything(self.broken)
                    self._flush()
                    break
                self._top_up()
                self._flush()
                if self._terminating or self._closing:
                    with self._lock:
                        holds = self._holds
                    if not self._flights and not self._pending and (self._terminating or not holds):
                        break
        except BaseException as exc:  # a bug here must not leave every caller waiting
            log.exception("robustpool: the Dask engine's thread failed")
            self.broken = RobustPoolError(f"robustpool's Dask engine failed: {exc!r}")
            self._fail_everything(self.broken)
            self._flush()
        finally:
            self._terminating = True  # anything still posted fails (see _queue)
            with self._lock:
                self._stopped = True
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, str):
                    item()
            self._flush()
            self._stop_nodes()
            self._finished.set()

    def _queue(self, parcels: list[Parcel]) -> None:
        if self.broken is not None or self._terminating:
            error = self.broken or PoolTerminatedError()
            for parcel in parcels:
                self._fail_items(parcel.chunk.job, parcel.chunk.start, len(parcel.blobs), error)
            return
        self._pending.extend(parcels)

    def _drop_pending(self, which: Callable[[Parcel], bool]) -> None:
        keep: deque[Parcel] = deque()
        for parcel in self._pending:
            if which(parcel):
                parcel.chunk.job.drop(parcel.chunk.start, len(parcel.blobs))
                self._touched.add(parcel.chunk.job)
            else:
                keep.append(parcel)
        self._pending = keep

    def _stop_job(self, job: Job) -> None:
        self._drop_pending(lambda p: p.chunk.job is job)
        self._stop_flights([f for f in self._flights.values() if f.task.job is job])

    def _stop_flights(self, flights: list[Flight]) -> None:
        """Stop these Dask tasks: cancelled in Dask (those not started never start), and
        their processes killed on whichever Dask worker runs them."""
        if not flights:
            return
        for flight in flights:
            flight.stopped = True
        keys = [f.key for f in flights]
        futures = [f.future for f in flights]
        client = self._client
        self._on_loop(client.cancel(futures, asynchronous=True), "cancel")
        self._on_loop(client.run(_node.kill_chunks, self.name, keys, wait=False, asynchronous=True), "kill")

    def _on_loop(self, coro: Any, what: str) -> None:
        """Run a coroutine of the client's on its event loop; a failure is only logged (what
        it was for is settled by the runner whatever Dask does)."""
        try:
            fut = asyncio.run_coroutine_threadsafe(_awaited(coro), self._client.loop.asyncio_loop)
        except RuntimeError as exc:  # the loop has stopped: the client is closed
            log.debug("robustpool: could not %s on Dask: %r", what, exc)
            return

        def done(f: Any) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.debug("robustpool: %s on Dask failed: %r", what, f.exception())

        fut.add_done_callback(done)

    def _begin_close(self) -> None:
        self._closing = True

    def _begin_terminate(self) -> None:
        if self._terminating:
            return
        self._terminating = self._closing = True
        error = PoolTerminatedError()
        for parcel in self._pending:
            self._fail_items(parcel.chunk.job, parcel.chunk.start, len(parcel.blobs), error)
        self._pending.clear()
        flights = list(self._flights.values())
        for flight in flights:
            self._settle(flight, error)
        self._stop_flights(flights)
        self._flights.clear()

    def _top_up(self) -> None:
        """Hand Dask the next chunks, up to the pool's limit, neighbours merged."""
        while self._pending and not self._terminating:
            limit = self._limit if self._pending[0].chunk.job.cancellable else self._deep
            free = limit - len(self._flights)
            if free <= 0:
                return
            parcel = self._pending.popleft()
            chunk = parcel.chunk
            job = chunk.job
            if not job.claim():  # cancelled meanwhile
                job.drop(chunk.start, len(parcel.blobs))
                self._touched.add(job)
                continue
            items = list(chunk.items)
            blobs = parcel.blobs
            if chunk.stream and chunk.item_deadline and self._pending:
                blobs = list(blobs)  # grown in place below: merging n parcels costs n, not n squared
                want = self._batch(chunk.func, free)
                while len(blobs) < want and self._pending and _follows(self._pending[0].chunk, chunk, len(blobs)):
                    nxt = self._pending.popleft()
                    if not job.claim():
                        job.drop(nxt.chunk.start, len(nxt.blobs))
                        self._touched.add(job)
                        self._drop_pending(lambda p, job=job: p.chunk.job is job)  # type: ignore[misc]
                        break
                    items += nxt.chunk.items
                    blobs += nxt.blobs
            task = Task(
                job, chunk.func, self._functions.blob(chunk.func), chunk.mode, chunk.start, items, b"", chunk.timeout,
                chunk.indexed, chunk.stream, chunk.item_deadline,
            )  # fmt: skip
            self._send(task, blobs)

    def _batch(self, func: FuncRef, free: int) -> int:
        """How many items to merge into the next Dask task of ``func``."""
        share = max(1, math.ceil(sum(len(p.blobs) for p in self._pending) / max(1, free)))
        per_item = self._estimates.item_seconds(func.func_id)
        by_time = _FIRST_BATCH if per_item is None else int(_BATCH_TARGET_S / max(per_item, 1e-7))
        return max(1, min(_MAX_BATCH, share, by_time))

    def _send(self, task: Task, blobs: list[bytes]) -> None:
        key = f"{self.name}-{next(self._keys)}"
        header = (
            task.func.func_id, task.func.name, task.blob, task.mode.value, task.start, task.timeout, task.indexed,
            task.stream, task.item_deadline,
        )  # fmt: skip
        future = self._client.submit(_node.run_chunk, self.name, key, header, blobs, key=key, pure=False, **self._options)
        self._flights[key] = Flight(key, task, future)
        future.add_done_callback(lambda f, key=key: self._post(key))

    def _on_finished(self, keys: list[str]) -> None:
        """Dask tasks that ended: errors are settled now; results are fetched together."""
        fetch = []
        for key in keys:
            flight = self._flights.get(key)
            if flight is None or key in self._fetching:
                continue
            if flight.stopped:
                del self._flights[key]
                continue
            status = flight.future.status
            if status == "finished":
                fetch.append(flight)
            else:
                self._on_dask_error(flight)
        if fetch:
            self._fetching.update(f.key for f in fetch)
            futures = [f.future for f in fetch]

            async def gather() -> None:
                try:
                    values = await self._client.gather(futures, asynchronous=True)
                except BaseException as exc:
                    error = exc
                    self._post(lambda: self._fetched(fetch, None, error))
                else:
                    self._post(lambda: self._fetched(fetch, values, None))

            self._on_loop(gather(), "gather")

    def _fetched(self, flights: list[Flight], values: list[Any] | None, error: BaseException | None) -> None:
        for k, flight in enumerate(flights):
            self._fetching.discard(flight.key)
            if self._flights.pop(flight.key, None) is None or flight.stopped:
                continue
            if values is None:
                # One of them could not be fetched: settle each by what Dask says of it now.
                self._flights[flight.key] = flight
                if flight.future.status == "finished":
                    self._fetch_one(flight)
                else:
                    self._on_dask_error(flight)
                continue
            self._on_reply(flight, values[k])

    def _fetch_one(self, flight: Flight) -> None:
        self._fetching.add(flight.key)
        future = flight.future

        async def one() -> None:
            try:
                value = await self._client.gather(future, asynchronous=True)
            except BaseException as exc:
                error = exc
                self._post(lambda: self._fetch_failed(flight, error))
            else:
                self._post(lambda: self._fetched([flight], [value], None))

        self._on_loop(one(), "gather")

    def _fetch_failed(self, flight: Flight, exc: BaseException) -> None:
        self._fetching.discard(flight.key)
        if self._flights.pop(flight.key, None) is not None and not flight.stopped:
            self._settle(flight, _lost(flight, exc, None))

    def _on_dask_error(self, flight: Flight) -> None:
        """Dask itself failed the task (not a task's own error: the node catches those): its
        Dask worker was lost too often (``KilledWorker``), it was cancelled, or the client closed."""
        self._flights.pop(flight.key, None)
        try:
            exc = flight.future.exception(timeout=_IDLE_TURN_S)
        except BaseException as err:  # cancelled: exception() raises CancelledError
            exc = err
        self._settle(flight, _lost(flight, exc, _address_of(getattr(exc, "last_worker", None))))

    def _on_reply(self, flight: Flight, reply: tuple[Any, ...]) -> None:
        outcomes, elapsed, host, killed, stats = reply
        if stats is not None:
            self._nodes[host] = stats
        t = flight.task
        job = t.job
        self._touched.add(job)
        # The timing that sizes the next batches: what the worker processes measured of
        # the items themselves. The node's wall time also holds its hop to its engine and
        # any wait for a core, which would shrink the batches as the machine gets busier.
        spent = 0.0
        timed = 0
        for outcome in outcomes:
            kind = outcome[0]
            if kind == _node.FRAME:
                _, index, count, status, body, took = outcome
                spent += took
                timed += count
                self._on_frame(flight, index - t.start, count, status, body)
            elif kind == _node.ERROR:
                _, index, blob = outcome
                k = index - t.start
                exc = _retell(ser.decode_exception(blob), t, k, host)
                self._report_fail(flight, index, exc)
        if not killed and t.count:
            if timed:
                self._estimates.learn(t.func.func_id, spent, timed, t.count)
            else:  # no result came (every item failed): the node's time, for want of better
                self._estimates.learn(t.func.func_id, elapsed, t.count, t.count)
        # Every item is reported once: one the node did not report (it was killed, which
        # only the owner asks for; or a bug) fails rather than waiting forever.
        missing = [t.start + k for k in range(t.count) if t.start + k not in flight.reported]
        if missing and not flight.stopped:
            lost = WorkerLostError(None, None, None, None, reason=f"the Dask worker {host} returned no outcome for it", host=host)
            for index in missing:
                self._report_fail(flight, index, lost)

    def _on_frame(self, flight: Flight, first: int, count: int, status: int, body: bytes) -> None:
        t = flight.task

        def deliver(job: Job, index: int, values: Sequence[Any]) -> None:
            flight.reported.update(range(index, index + len(values)))
            self._done += len(values)
            job.deliver(index, values)

        def fail(job: Job, index: int, exc: BaseException) -> None:
            self._report_fail(flight, index, exc)

        try:
            decoded = decode.load(status, memoryview(body), count)
        except ProtocolError as exc:
            for k in range(first, first + count):
                fail(t.job, t.start + k, RobustPoolError(f"robustpool: a malformed result from Dask: {exc}"))
            return
        except BaseException as exc:
            decode.report_unloadable(t, first, count, exc, fail)
            return
        decode.report(t, first, count, status, decoded, deliver, fail)

    def _report_fail(self, flight: Flight, index: int, exc: BaseException) -> None:
        flight.reported.add(index)
        self._failed += 1
        if isinstance(exc, TaskTimeoutError):
            self._timed_out += 1
        elif isinstance(exc, InitializerError) and self.broken is None:
            # One Dask worker's engine broke on the initializer: the pool is broken, as on
            # one machine (an initializer that fails is the code's or the setup's doing,
            # not a node's), and stops; the other workers' engines stop with it.
            self.broken = exc
        flight.task.job.fail(index, exc)

    def _settle(self, flight: Flight, error: BaseException) -> None:
        """Fail every item of ``flight`` not reported yet with ``error``."""
        t = flight.task
        self._touched.add(t.job)
        for k in range(t.count):
            if t.start + k not in flight.reported:
                self._report_fail(flight, t.start + k, _with_item(error, t, k))

    def _fail_items(self, job: Job, start: int, count: int, error: BaseException) -> None:
        self._touched.add(job)
        for index in range(start, start + count):
            self._failed += 1
            job.fail(index, error)

    def _fail_everything(self, error: BaseException) -> None:
        for parcel in self._pending:
            self._fail_items(parcel.chunk.job, parcel.chunk.start, len(parcel.blobs), error)
        self._pending.clear()
        for flight in list(self._flights.values()):
            self._settle(flight, error)
        self._stop_flights(list(self._flights.values()))
        self._flights.clear()

    def _check_client(self) -> None:
        """A closed client can run nothing more: the pool is broken, and says why."""
        if self.broken is None and self._client.status in ("closing", "closed"):
            self.broken = RobustPoolError(
                f"robustpool's Dask engine cannot run anything more: its client ({self._client.id}) was closed"
            )

    def _renew_lease(self) -> None:
        now = time.monotonic()
        if now - self._renewed >= self._owner_timeout / _RENEWALS and self.broken is None:
            self._renewed = now
            self._lease += 1
            self._on_loop(self._client.set_metadata(_node.lease_key(self.name), self._lease, asynchronous=True), "lease")

    def _flush(self) -> None:
        touched, self._touched = self._touched, set()
        for job in touched:
            job.flush()

    def _stop_nodes(self) -> None:
        """Drop the pool's engines on the Dask workers (the plugin's teardown), bounded."""
        if self._client.status in ("closing", "closed"):
            return
        done = threading.Event()

        def unregister() -> None:
            try:
                self._client.unregister_worker_plugin(self.name)
            except BaseException as exc:
                log.debug("robustpool: could not drop pool %s from Dask: %r", self.name, exc)
            done.set()

        threading.Thread(target=unregister, name=f"robustpool-dask-stop-{self.name}", daemon=True).start()
        if not done.wait(_STOP_S):
            log.warning("robustpool: Dask did not drop pool %s's engines within %.0f s", self.name, _STOP_S)


async def _awaited(coro: Any) -> Any:
    return await coro


def _follows(nxt: Chunk, chunk: Chunk, count: int) -> bool:
    """Whether ``nxt`` continues ``chunk`` (now ``count`` items long) in one Dask task."""
    return (
        nxt.job is chunk.job
        and nxt.func.func_id == chunk.func.func_id
        and nxt.start == chunk.start + count
        and nxt.stream
        and nxt.item_deadline
        and nxt.timeout == chunk.timeout
    )


def _pickle_each(chunk: Chunk) -> list[Parcel]:
    """``chunk``'s items pickled one by one, as runs of picklable items (one run, unless
    some fail: those fail on the job at once, as the process engine does)."""
    items = chunk.items
    dumps = ser.dumps
    try:
        return [Parcel(chunk, [dumps(item) for item in items])]
    except Exception:
        pass
    parcels: list[Parcel] = []
    run: list[bytes] = []
    run_start = 0
    for k, item in enumerate(items):
        try:
            run.append(dumps(item))
        except Exception as exc:
            if run:
                parcels.append(Parcel(_part(chunk, run_start, k), run))
                run = []
            fail_unpicklable(chunk, k, exc)
            run_start = k + 1
    if run:
        parcels.append(Parcel(_part(chunk, run_start, len(items)), run))
    return parcels


def _part(chunk: Chunk, begin: int, end: int) -> Chunk:
    return replace(chunk, start=chunk.start + begin, items=chunk.items[begin:end])


def _lost(flight: Flight, exc: BaseException, host: str | None) -> BaseException:
    """The error of a chunk Dask failed (see ``_on_dask_error``), for its items."""
    if isinstance(exc, RobustPoolError):
        return exc
    name = type(exc).__name__
    if name == "KilledWorker":
        reason = f"Dask lost the worker running it (and each worker it was moved to): {name}: {exc}"
    elif name in ("CancelledError", "FutureCancelledError"):
        reason = f"Dask cancelled it (the client closed, or the cluster was restarted): {exc}"
    else:
        reason = f"Dask failed it: {name}: {exc}"
    lost = WorkerLostError(None, None, reason=reason, host=host)
    lost.__cause__ = exc
    return lost


def _address_of(worker: object) -> str | None:
    """A Dask worker's address, from what Dask gives (``KilledWorker.last_worker`` is the
    scheduler's ``WorkerState``, or its address)."""
    if worker is None:
        return None
    address = getattr(worker, "address", worker)
    return address if isinstance(address, str) else str(address)


def _with_item(error: BaseException, t: Task, k: int) -> BaseException:
    """``error`` (one for a whole chunk) naming item ``k`` of ``t``, for the errors that name an item."""
    return _retell(error, t, k, error.host) if isinstance(error, WorkerLostError) else error
