"""ThreadEngine: the ``Engine`` of threads in the owner (see ``robustpool._engine``).

Objects pass by reference: nothing is pickled, a function's arguments and results are the
caller's own objects (as in ``multiprocessing.pool.ThreadPool``). Data flow of one chunk::

    caller --Chunk--> ThreadEngine.submit --> _queue --> a worker thread runs its items
    worker thread --deliver / fail, then flush--> the chunk's job --wakes--> user

What threads cannot honestly do, the engine does not claim (``capabilities`` is empty): a
running call cannot be stopped, so there is no task timeout, no stopping a running future,
no memory limit and no recycling; facades refuse those options at the call.

State: ``_cond`` guards every field below it in ``__init__``; jobs are reported to outside
it (a job's callbacks and cleanups may call back into the engine). Each worker thread
reports its own chunks, so a job may hear from several threads at once: jobs lock themselves.

Terminating cannot stop a running call either. ``terminate()`` fails at once every item not
yet reported, queued or running, with PoolTerminatedError, so nobody waits for them; a
running call's outcome, when it comes, is still reported, and the job treats it as late (a
value nobody can receive any more is passed to the job's cleanup, see ``_engine.Job``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .._calls import Mode, function_name
from .._config import PoolConfig
from .._engine import Capability, Chunk, FuncRef, Job, ReleaseOnce, at_exit_once
from .._errors import InitializerError, PoolTerminatedError, WorkerStartError
from .._process._schedule import Estimates
from .._stats import PoolStats, WorkerStats

log = logging.getLogger("robustpool")

_INIT_FAILURES = 3  # initializer failures in a row (in fresh threads) that break the engine
_FLUSH_S = 0.001  # a streaming chunk reports what it has at least this often
_live: weakref.WeakSet[ThreadEngine] = weakref.WeakSet()
_names = itertools.count(1)


def _terminate_all() -> None:
    """At interpreter exit: every live thread engine fails what is outstanding (its
    threads are daemons; a running call cannot be waited for without a bound)."""
    for engine in list(_live):
        engine.terminate()


class _Running:
    """A chunk a worker thread runs, and how many of its items were reported (or are about
    to be). ``reported`` is written by the running thread alone, before it reports those
    items, and read by terminate() under _cond: one attribute store, so terminate() reads
    the old count or the new one. Either is fine: an item counted before terminate() read
    it is reported once, by its thread; one counted after was failed by terminate() too,
    and its job takes the second report as late (see ``_engine.Job.deliver``)."""

    __slots__ = ("chunk", "reported")

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.reported = 0


class ThreadEngine:
    """Runs chunks in up to ``processes`` threads of the owner, started as work arrives."""

    capabilities = Capability.NONE

    def __init__(self, config: PoolConfig, name: str = "") -> None:
        self._config = config
        self._prefix = name or f"robustpool-thread-{next(_names)}"
        self._estimates = Estimates()  # per-function timings, for imap's batches (read racily)
        self._last: FuncRef | None = None  # see function(); replaced whole, read without a lock
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Chunk] = deque()
        self._running: set[_Running] = set()
        self._threads: dict[int, int] = {}  # thread number -> chunks it ran (alive ones only)
        self._handles: list[threading.Thread] = []  # every thread started and maybe alive, for join
        self._started = 0  # threads started, for their names
        self._starting = 0  # threads started whose initializer has not finished
        self._idle = 0  # threads waiting for a chunk
        self._holds = 0
        self._closing = False
        self._terminated = False
        self._broken: BaseException | None = None
        self._init_failures = 0  # in a row
        self._exits: dict[str, int] = {}
        self._done = 0
        self._failed = 0
        self._finished = threading.Event()
        at_exit_once(_terminate_all)
        _live.add(self)

    # -- what facades read --

    @property
    def capacity(self) -> int:
        return self._config.processes

    @property
    def broken(self) -> BaseException | None:
        return self._broken

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def function(self, fn: Callable[..., Any]) -> FuncRef:
        # The last function's handle is reused (a loop of submit(f, x) calls one function):
        # one tuple read, no new handle. It keeps that one function alive until the next.
        last = self._last
        if last is not None and last.fn is fn:
            return last
        ref = self._last = FuncRef(FuncRef.new_id(), function_name(fn), fn)
        return ref

    def batch_size(self, func: FuncRef, ahead: int) -> int:
        return self._estimates.batch_size(func.func_id, ahead, self._config.processes)

    def pids(self) -> list[int]:
        return []

    def stats(self) -> PoolStats:
        with self._cond:
            workers = tuple(WorkerStats(None, n, None) for n in self._threads.values())
            replaced = tuple(sorted(self._exits.items()))
            done, failed = self._done, self._failed
        return PoolStats(len(workers), done, failed, 0, 0, sum(n for _, n in replaced), replaced, workers)

    # -- submitting, cancelling --

    def submit(self, chunks: Sequence[Chunk]) -> int:
        if not self._closing and len(self._threads) >= self._config.processes:
            # Every thread is up: append without the lock (a deque's append is atomic), so
            # the caller never waits for a thread that holds it. Appending first, then
            # reading _idle and _finished, pairs with the threads (which count themselves
            # idle before they look at the queue) and terminate() (which marks the engine
            # finished before it drains the queue): either they see the chunks, or we see
            # them and take the locked path below (see _after_append).
            self._queue.extend(chunks)
            if self._idle or self._finished.is_set() or self._broken is not None:
                self._after_append()
            return 0
        with self._cond:
            # Finished (closed with nothing held, or terminated): no thread would take them.
            refused = self._broken or (PoolTerminatedError() if self._finished.is_set() else None)
            unrun: Sequence[Chunk] = chunks
            if refused is None:
                self._queue.extend(chunks)
                unrun = self._start_threads_locked()
                if self._idle:
                    self._cond.notify(len(chunks))
                refused = self._broken
        if refused is not None:
            for chunk in unrun:
                self._fail_chunk(chunk, 0, refused)
        return 0  # objects are kept as they are: no bytes held for them

    def _after_append(self) -> None:
        """Chunks were appended without the lock: wake an idle thread, or, if the engine
        finished or broke meanwhile (both mark it before they drain the queue), fail
        whatever is queued (each chunk is popped once)."""
        with self._cond:
            if not self._finished.is_set() and self._broken is None:
                self._cond.notify(len(self._queue))
                return
            stranded = self._drain_locked()
        err = self._broken or PoolTerminatedError()
        for chunk in stranded:
            self._fail_chunk(chunk, 0, err)

    def _drain_locked(self) -> list[Chunk]:
        """Under _cond: pop every queued chunk (popleft, never clear(): a chunk appended
        without the lock meanwhile is either popped here or left for its thread)."""
        out: list[Chunk] = []
        queue = self._queue
        while queue:
            out.append(queue.popleft())
        return out

    def cancel(self, job: Job) -> None:
        self._take_queued(lambda c: c.job is job)

    def kill(self, job: Job) -> None:
        # A running thread cannot be stopped: its chunk runs to the end, and its job (which
        # ended itself when it was stopped) treats what it still reports as late.
        self.cancel(job)

    def cancel_all(self) -> None:
        self._take_queued(lambda c: c.job.cancellable)

    def _take_queued(self, which: Callable[[Chunk], bool]) -> None:
        with self._cond:
            taken: list[Chunk] = []
            kept: list[Chunk] = []
            for chunk in self._drain_locked():
                (taken if which(chunk) else kept).append(chunk)
            # Back at the front, in order (chunks appended meanwhile stay behind them).
            self._queue.extendleft(reversed(kept))
            if taken:
                self._maybe_finish_locked()
        for chunk in taken:
            chunk.job.drop(chunk.start, len(chunk.items))
        for job in {c.job for c in taken}:
            job.flush()

    # -- lifecycle --

    def hold(self) -> ReleaseOnce:
        with self._cond:
            self._holds += 1
        return ReleaseOnce(self._release)

    def _release(self) -> None:
        with self._cond:
            self._holds -= 1
            self._maybe_finish_locked()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._maybe_finish_locked()

    def terminate(self) -> None:
        with self._cond:
            if self._terminated:
                return
            self._terminated = self._closing = True
            self._finished.set()  # before draining: see submit()
            queued = self._drain_locked()
            owed = [(run.chunk, run.reported) for run in self._running]
            self._cond.notify_all()
            _live.discard(self)
        err = PoolTerminatedError()
        for chunk in queued:
            self._fail_chunk(chunk, 0, err)
        for chunk, reported in owed:
            self._fail_chunk(chunk, reported, err)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until finished, then (after close) for the threads to exit. After
        terminate, threads still running a call are not waited for (they cannot be stopped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._finished.wait(timeout):
            return False
        if self._terminated:
            return True
        with self._cond:
            threads = list(self._handles)
        for t in threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return False
        return True

    def _maybe_finish_locked(self) -> None:
        """Under _cond: closed, and nothing queued, running or still to come: finished."""
        if self._closing and not self._queue and not self._running and not self._holds and not self._finished.is_set():
            self._finished.set()
            _live.discard(self)
            self._cond.notify_all()  # idle threads exit

    # -- worker threads --

    def _start_threads_locked(self) -> list[Chunk]:
        """Under _cond: a thread for each queued chunk no idle thread will take, up to
        the pool's size. Returns the chunks to fail (outside the lock) if none can start."""
        while len(self._queue) > self._idle + self._starting and len(self._threads) < self._config.processes:
            self._started += 1
            self._starting += 1
            number = self._started
            thread = threading.Thread(target=self._work, args=(number,), name=f"{self._prefix}-{number}", daemon=True)
            self._threads[number] = 0
            self._handles = [t for t in self._handles if t.is_alive()]
            self._handles.append(thread)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread": a thread limit
                del self._threads[number]
                self._starting -= 1
                self._handles.pop()
                log.error("robustpool: could not start a thread for the pool: %s", exc)
                if not self._threads:
                    return self._break_locked(WorkerStartError(1, str(exc)))
                return []
        return []

    def _work(self, number: int) -> None:
        if not self._initialize(number):
            return
        run: _Running | None = None
        failed = 0
        while True:
            with self._cond:  # one acquisition per chunk: settle the last one, take the next
                if run is not None:
                    self._running.discard(run)
                    self._failed += failed
                    self._done += len(run.chunk.items) - failed
                    self._maybe_finish_locked()
                # Idle first, then look: a chunk appended without the lock is seen here, or
                # its submitter sees this thread idle and notifies (see submit).
                self._idle += 1
                while not self._queue and not self._finished.is_set():
                    self._cond.wait()  # idle until work or the end: notified by both
                self._idle -= 1
                if not self._queue or self._terminated:
                    del self._threads[number]
                    return
                run = _Running(self._queue.popleft())
                self._running.add(run)
                self._threads[number] += 1
            try:
                failed = self._run(run)
            except BaseException as exc:  # pragma: no cover - a bug in a job or in robustpool
                log.critical("robustpool: a thread of the pool failed reporting a result", exc_info=exc)
                failed = 0

    def _initialize(self, number: int) -> bool:
        """Run the initializer in a fresh thread; False if it failed (the thread ends)."""
        config = self._config
        try:
            if config.initializer is not None:
                config.initializer(*config.initargs)
        except BaseException as exc:
            text = "".join(traceback.format_exception(exc))
            log.error("robustpool: the initializer failed in thread %s:\n%s", number, text)
            with self._cond:
                del self._threads[number]
                self._starting -= 1
                self._init_failures += 1
                self._exits["initializer failed"] = self._exits.get("initializer failed", 0) + 1
                if self._init_failures >= _INIT_FAILURES:
                    broken = self._break_locked(InitializerError(self._init_failures, text))
                else:
                    broken = self._start_threads_locked()  # a fresh thread tries again, if work waits
            for chunk in broken:
                self._fail_chunk(chunk, 0, self._broken or exc)
            return False
        with self._cond:
            self._init_failures = 0
            self._starting -= 1
        return True

    def _break_locked(self, err: BaseException) -> list[Chunk]:
        """Under _cond: nothing more can run; returns the queued chunks, for the caller to
        fail outside the lock."""
        if self._broken is None:
            self._broken = err
        queued = self._drain_locked()
        self._closing = True
        self._maybe_finish_locked()
        return queued

    def _run(self, run: _Running) -> int:
        """Run a chunk's items and report them; returns how many failed."""
        chunk = run.chunk
        job = chunk.job
        count = len(chunk.items)
        if not job.claim():
            run.reported = count
            job.drop(chunk.start, count)
            job.flush()
            return 0
        fn, mode, items = chunk.func.fn, chunk.mode, chunk.items
        failed = 0
        if count == 1 and not chunk.stream:  # apply, submit: one call
            ok, value = _call(fn, mode, items[0])
            run.reported = 1
            if ok:
                job.deliver(chunk.start, (value,))
            else:
                job.fail(chunk.start, value)
            job.flush()
            return 0 if ok else 1
        if not chunk.stream:
            outcome, errors = _run_all(fn, mode, items)
            run.reported = count  # see _Running
            failed = self._tell(job, chunk.start, outcome, errors)
            job.flush()
            return failed
        # Each item's outcome as soon as it is known (imap's batches, or results to clean):
        # values are handed over in runs, at least every _FLUSH_S, so a batch of tiny items
        # costs one report, and a slow item is never held back behind the next one.
        began = last = time.perf_counter()
        values: list[Any] = []
        first = 0  # the index (in the chunk) of values[0]
        for k, item in enumerate(items):
            ok, value = _call(fn, mode, item)
            if ok:
                if not values:
                    first = k
                values.append(value)
            else:
                if values:
                    run.reported = k
                    job.deliver(chunk.start + first, values)
                    values = []
                run.reported = k + 1
                failed += 1
                job.fail(chunk.start + k, value)
            now = time.perf_counter()
            if now - last >= _FLUSH_S:
                if values:
                    run.reported = k + 1
                    job.deliver(chunk.start + first, values)
                    values = []
                job.flush()
                last = now
        if values:
            run.reported = count
            job.deliver(chunk.start + first, values)
        job.flush()
        self._estimates.learn(chunk.func.func_id, time.perf_counter() - began, count, count)  # sizes imap's batches
        return failed

    def _tell(self, job: Job, start: int, values: list[Any], errors: dict[int, BaseException] | None) -> int:
        """Report a chunk's outcomes: the runs of values between errors at once, each
        error alone; returns how many failed."""
        if errors is None:
            job.deliver(start, values)
            return 0
        run_start = 0
        for k in sorted(errors):
            if run_start < k:
                job.deliver(start + run_start, values[run_start:k])
            job.fail(start + k, errors[k])
            run_start = k + 1
        if run_start < len(values):
            job.deliver(start + run_start, values[run_start:])
        return len(errors)

    def _fail_chunk(self, chunk: Chunk, first: int, err: BaseException) -> None:
        for k in range(first, len(chunk.items)):
            chunk.job.fail(chunk.start + k, err)
        chunk.job.flush()


def _run_all(fn: Callable[..., Any], mode: Mode, items: Sequence[Any]) -> tuple[list[Any], dict[int, BaseException] | None]:
    """Every item's outcome: the values (None where an item failed) and the errors by
    position. The ``try`` sits outside the tight loops (a failing item restarts the loop
    after it), so a chunk of tiny items costs about what a bare loop does."""
    values: list[Any] = []
    append = values.append
    errors: dict[int, BaseException] | None = None
    n = len(items)
    while len(values) < n:
        k = len(values)
        rest = items[k:] if k else items
        try:
            if mode == Mode.MAP:
                for x in rest:
                    append(fn(x))
            elif mode == Mode.STAR:
                for x in rest:
                    append(fn(*x))
            else:
                for args, kwds in rest:
                    append(fn(*args, **kwds))
        except BaseException as exc:  # SystemExit too: the item's error, as in a process worker
            _strip_our_frame(exc)
            if errors is None:
                errors = {}
            errors[len(values)] = exc
            append(None)
    return values, errors


def _strip_our_frame(exc: BaseException) -> None:
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        exc.__traceback__ = tb.tb_next  # the traceback starts in the user's function


def _call(fn: Callable[..., Any], mode: Mode, item: Any) -> tuple[bool, Any]:
    """One item's outcome: (True, value) or (False, the exception it raised)."""
    try:
        if mode == Mode.MAP:
            return True, fn(item)
        if mode == Mode.STAR:
            return True, fn(*item)
        args, kwds = item
        return True, fn(*args, **kwds)
    except BaseException as exc:  # SystemExit too: the item's error, as in a process worker
        _strip_our_frame(exc)
        return False, exc
