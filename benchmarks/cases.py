"""The benchmark cases: what each one runs, how it is timed, and how it is summarised.

Every in-process case builds a fresh pool of ``workers`` processes (threads, for the thread
pools), warms it (every worker has run a task, so imports and process start-up are not
timed) and times only the operation. ``calls`` and ``async_calls`` time single calls issued
one by one through each peer's own single-call API (see ``peers``), blocking and awaited;
robustpool's other APIs (``RobustPool.submit``, ``RobustExecutor``) are rows of their own
there, compared with ``ProcessPoolExecutor``, as ``RobustThreadPoolExecutor`` is compared with
``ThreadPoolExecutor``. ``startup`` times construction up to the first result instead, and ``exit`` the ``with``
block's end on a warm pool (each peer's own ``__exit__``). ``recovery``, ``imap_memory`` and
``startup_threaded`` run in fresh child processes (see ``child.py``) because a peer may hang
or break there, because peak RSS is per process, and because only a fresh process has a first
pool. ``import`` times each peer's imports in a fresh ``python -c`` (nothing of the harness
loaded), after an untimed run that compiled its bytecode into a cache of its own.

A case may have *parts*: more rows, each from one value of every repeat's detail, ranked
like the case's own (``startup_threaded`` has the first pool of the process as its value and
the second pool as its part ``startup_threaded_2nd``).

The thread pools run only in ``peers.THREAD_CASES``. A pool of threads leaves no process,
but its threads must be gone before robustpool builds a pool (its supervisor is forked only
from a single-threaded owner): ``fresh_pool`` waits for them after closing a thread pool and
notes any that outlive it, as it notes processes a pool leaves behind.

The Dask peers (see ``peers``) run on the run's cluster (``Context.cluster``), in
``peers.DASK_CASES``, with fewer items where plain Dask would otherwise take a minute per repeat
(``CLUSTER_SIZES``; both Dask peers alike, so their rows compare); their pools are warmed with
single calls (an imap's tiny items would go as one merged Dask task, to one Dask worker). Their
imap cases also record when the first result came and the rate over the second half of the
items, which tells a pool's start from its steady rate. ``roundtrip`` (one call at a time)
runs for them only; the ``serial`` reference (no pool) runs in ``cpu_1ms`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import procs
from .cluster import Cluster
from .config import Config
from .deadline import deadline
from .peers import (
    CLOSE_TIMEOUT,
    DASK,
    PEERS,
    PPE,
    ROBUSTDASK,
    ROBUSTPOOL,
    ROBUSTTHREADPOOL,
    SERIAL,
    STDLIB,
    THREADPOOL,
    TPE,
    PeerSpec,
    PoolHandle,
    mp_default_chunksize,
    variants,
)
from .report import format_value
from .results import Outcome, Row
from .work import double, echo, noop, spin, warm

MIB = 1 << 20
# Items of a case on the Dask cluster, where the harness's own sizes would keep plain Dask
# (a few hundred tasks a second here) a minute per repeat; the others keep their size.
CLUSTER_SIZES = {"tiny_imap_c1": 2_000, "calls": 1_000}


@dataclass
class Context:
    """What every measurement shares: the settings, calibration, inputs and notes."""

    config: Config
    thread_baseline: int
    spin_loops: int = 0
    spin_result: int = 0
    serial_task_s: float = 0.0
    payload: bytes = b""
    notes: dict[str, None] = field(default_factory=dict)  # ordered set
    cluster: Cluster | None = None  # the run's Dask cluster, when a Dask peer runs
    # The medians of the rows of the cases run so far, by (case, peer label), for summaries
    # that compare one row with another (cpu_1ms on the cluster with the serial row).
    medians: dict[tuple[str, str], float] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.notes[text] = None

    @property
    def workers(self) -> int:
        return self.config.workers

    @property
    def ideal_rate(self) -> float:
        """cpu_1ms ideal: ``workers`` cores each running tasks at the serial speed (tasks/s)."""
        return self.workers / self.serial_task_s if self.serial_task_s > 0 else 0.0

    @property
    def client(self) -> Any:
        """The Dask client of the run's cluster, or None."""
        return self.cluster.client if self.cluster is not None else None

    def size(self, peer: PeerSpec, case: str, full: int, minimum: int = 1) -> int:
        """Items of ``case`` for ``peer``: ``full`` (or the cluster's size) times the scale."""
        on_cluster = CLUSTER_SIZES.get(case) if peer.on_cluster is not None else None
        return self.config.size(full if on_cluster is None else on_cluster, minimum)


def warm_up(pool: PoolHandle, workers: int, *, calls: bool = False) -> None:
    """Run a short sleeping task on every worker, so they all exist and have imported the work
    module; ``calls``: as single calls (apply_async, submit) rather than an imap."""
    if calls:
        waiters = [pool.submit(warm, 0.02) for _ in range(2 * workers)]
        pids = [waiter.get() for waiter in waiters]
    else:
        pids = list(pool.imap(warm, [0.02] * (2 * workers), 1))
    if len(pids) != 2 * workers:
        raise RuntimeError(f"warm-up returned {len(pids)} results, expected {2 * workers}")


@contextlib.contextmanager
def tidy(peer: PeerSpec, ctx: Context) -> Iterator[None]:
    """Around one pool of ``peer``: before, wait for the threads of earlier pools to end;
    after, wait for a thread pool's threads to end (noting any left after 2 s: they cannot be
    killed) and reap any process the pool left behind, noting it."""
    before = procs.children()
    threads = procs.settle_threads(ctx.thread_baseline)
    if peer.key == ROBUSTPOOL and threads > 1:
        ctx.note(
            f"robustpool: the owner had {threads} threads when a pool was built"
            f" (baseline {ctx.thread_baseline}), so its supervisor was not forked from the owner"
        )
    try:
        yield
    finally:
        if peer.threads:
            # Joined threads can linger in /proc/self/task for a moment after join() returns.
            left = procs.settle_threads(threads, timeout=2.0)
            if left > threads:
                ctx.note(f"{peer.label}: {left - threads} thread(s) still alive 2 s after the pool was closed")
        leaked = procs.reap_children(before)
        if leaked:
            ctx.note(f"{peer.label}: processes still alive 2 s after the pool was closed (killed): {'; '.join(leaked)}")


@contextlib.contextmanager
def fresh_pool(peer: PeerSpec, ctx: Context, *, warmed: bool = True) -> Iterator[tuple[PoolHandle, float]]:
    """A new pool of ``peer`` and the ``perf_counter()`` taken just before building it; after,
    the pool is closed (bounded; killed on failure), within ``tidy``."""
    with tidy(peer, ctx):
        start = time.perf_counter()
        pool = peer.build(ctx.workers, ctx.client)
        ok = False
        try:
            if warmed:
                warm_up(pool, ctx.workers, calls=peer.on_cluster is not None)
            yield pool, start
            ok = True
        finally:
            problem = shutdown(pool, graceful=ok, what=f"{peer.label} shutdown")
            if problem:
                ctx.note(f"{peer.label}: {problem}")


def shutdown(pool: PoolHandle, *, graceful: bool, what: str) -> str | None:
    """Close (or kill) ``pool`` within a bound, killing it if closing fails; describe any failure."""
    try:
        with deadline(CLOSE_TIMEOUT + 5, what):
            if graceful:
                pool.close()
            else:
                pool.kill()
            return None
    except Exception as exc:
        problem = f"{'close' if graceful else 'terminate'} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    if graceful:
        with contextlib.suppress(Exception), deadline(CLOSE_TIMEOUT + 5, what + " (kill)"):
            pool.kill()
    return problem


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- in-process cases ---------------------------------------------------------------------


def tiny_map(peer: PeerSpec, ctx: Context) -> Outcome:
    n = ctx.config.size(200_000, 100)
    chunksize = None if peer.default_chunksize else mp_default_chunksize(n, ctx.workers)
    with fresh_pool(peer, ctx) as (pool, _):
        start = time.perf_counter()
        out = pool.map(double, range(n), chunksize)
        elapsed = time.perf_counter() - start
    _expect(out == list(range(0, 2 * n, 2)), "map returned wrong results")
    shown: int | str = "own default" if chunksize is None else chunksize
    if not peer.chunks:
        shown = f"{shown} (ignored by {peer.label})"
    return Outcome(n / elapsed, detail={"chunksize": shown})


def tiny_imap_c1(peer: PeerSpec, ctx: Context) -> Outcome:
    n = ctx.size(peer, "tiny_imap_c1", 20_000, 50)
    if peer.on_cluster is not None:
        return _cluster_imap(peer, ctx, double, range(n), list(range(0, 2 * n, 2)))
    with fresh_pool(peer, ctx) as (pool, _):
        start = time.perf_counter()
        total = count = 0
        for value in pool.imap(double, range(n), 1):
            total += value
            count += 1
        elapsed = time.perf_counter() - start
    _expect(count == n and total == n * (n - 1), "imap returned wrong results")
    return Outcome(n / elapsed)


def cpu_1ms(peer: PeerSpec, ctx: Context) -> Outcome:
    n = ctx.config.size(2_000, 20)
    if peer.on_cluster is not None:
        return _cluster_imap(peer, ctx, spin, [ctx.spin_loops] * n, [ctx.spin_result] * n)
    with fresh_pool(peer, ctx) as (pool, _):
        start = time.perf_counter()
        results = list(pool.imap(spin, [ctx.spin_loops] * n, 1))
        elapsed = time.perf_counter() - start
    _expect(len(results) == n and all(r == ctx.spin_result for r in results), "spin returned wrong results")
    return Outcome(n / elapsed)


def _cluster_imap(peer: PeerSpec, ctx: Context, func: Callable[[Any], Any], items: Sequence[Any], expected: list[Any]) -> Outcome:
    """``imap(func, items, chunksize=1)`` on the Dask cluster: the rate, when the first result
    came (``first_ms``) and the rate over the second half of the items (``second_half``)."""
    n = len(items)
    out: list[Any] = []
    first = middle = 0.0
    with fresh_pool(peer, ctx) as (pool, _):
        start = time.perf_counter()
        for value in pool.imap(func, items, 1):
            out.append(value)
            if len(out) == 1:
                first = time.perf_counter()
            elif len(out) == n // 2:
                middle = time.perf_counter()
        end = time.perf_counter()
    _expect(out == expected, f"{getattr(func, '__name__', func)} returned wrong results")
    rest = n - n // 2
    return Outcome(n / (end - start), detail={"first_ms": (first - start) * 1000, "second_half": rest / (end - middle)})


def payload_1mb(peer: PeerSpec, ctx: Context) -> Outcome:
    n = ctx.config.size(300, 3)
    size = len(ctx.payload)
    with fresh_pool(peer, ctx) as (pool, _):
        start = time.perf_counter()
        count = 0
        for data in pool.imap(echo, [ctx.payload] * n, 1):
            _expect(len(data) == size and (count > 0 or data == ctx.payload), "echo returned different bytes")
            count += 1
        elapsed = time.perf_counter() - start
    _expect(count == n, f"echo returned {count} results, expected {n}")
    return Outcome(n * size / MIB / elapsed)


def calls(peer: PeerSpec, ctx: Context) -> Outcome:
    """20,000 single calls issued one by one (the peer's apply_async or submit), then every result taken."""
    n = ctx.size(peer, "calls", 20_000, 50)
    with fresh_pool(peer, ctx) as (pool, _):
        issue, take = pool.caller()
        start = time.perf_counter()
        pending = [issue(noop, i) for i in range(n)]
        out = [take(p) for p in pending]
        elapsed = time.perf_counter() - start
    _expect(out == list(range(n)), "single calls returned wrong results")
    return Outcome(n / elapsed)


def roundtrip(peer: PeerSpec, ctx: Context) -> Outcome:
    """Single calls one at a time: each issued and its result taken before the next (ms per call)."""
    n = ctx.config.size(200, 5)
    with fresh_pool(peer, ctx) as (pool, _):
        issue, take = pool.caller()
        start = time.perf_counter()
        for i in range(n):
            _expect(take(issue(noop, i)) == i, "a single call returned a wrong result")
        elapsed = time.perf_counter() - start
    return Outcome(elapsed / n * 1000)


def async_calls(peer: PeerSpec, ctx: Context) -> Outcome:
    """The same calls issued one by one from a coroutine, awaited together with ``asyncio.gather``."""
    n = ctx.config.size(20_000, 50)

    async def gathered(pool: PoolHandle) -> tuple[float, list[object]]:
        issue = pool.async_caller()
        if issue is None:
            raise TypeError(f"{peer.label} has no awaitable single call")
        start = time.perf_counter()
        out = await asyncio.gather(*[issue(noop, i) for i in range(n)])
        return time.perf_counter() - start, out

    with fresh_pool(peer, ctx) as (pool, _):
        elapsed, out = asyncio.run(gathered(pool))
    _expect(out == list(range(n)), "awaited calls returned wrong results")
    return Outcome(n / elapsed)


def startup(peer: PeerSpec, ctx: Context) -> Outcome:
    with fresh_pool(peer, ctx, warmed=False) as (pool, start):
        value = pool.apply(noop, 7)
        elapsed = time.perf_counter() - start
    _expect(value == 7, f"noop returned {value!r}")
    return Outcome(elapsed * 1000)


def exit_with(peer: PeerSpec, ctx: Context) -> Outcome:
    """``with pool:`` around a warm-up (a task on every worker, every result taken); the time
    from the block's last statement to just after the peer's own ``__exit__`` returned."""
    with tidy(peer, ctx):
        pool = peer.factory(ctx.workers)
        left = False
        try:
            with pool.context():
                warm_up(pool, ctx.workers)
                start = time.perf_counter()
            elapsed = time.perf_counter() - start
            left = True
        finally:
            if not left:  # the block failed (or __exit__ did): make sure the pool is gone
                problem = shutdown(pool, graceful=False, what=f"{peer.label} shutdown")
                if problem:
                    ctx.note(f"{peer.label}: {problem}")
    return Outcome(elapsed * 1000)


# -- isolated cases (the work itself is in child.py) -------------------------------------


def recovery(peer: PeerSpec, ctx: Context) -> Outcome:
    run = procs.run_child({"case": "recovery", "peer": peer.key, "workers": ctx.workers}, ctx.config.recovery_timeout)
    if run.leaked:
        ctx.note(f"{peer.label} recovery: processes outlived the child (killed): {'; '.join(run.leaked)}")
    if run.result is not None:
        outcome = Outcome(run.result.get("value"), run.result["status"], run.result.get("detail", {}))
        if run.timed_out:
            outcome.detail["shutdown"] = "hung after the result"
        return outcome
    last = run.stages[-1] if run.stages else "start"
    if run.timed_out:
        return Outcome.failed("hang", after=last)
    return Outcome.failed(f"error (child exited {run.returncode} after {last}: {_last_line(run.stderr)})")


def imap_memory(peer: PeerSpec, ctx: Context) -> Outcome:
    chunksize = ctx.config.size(100)
    peaks: list[float] = []
    for n in (ctx.config.size(10**4, 10), ctx.config.size(10**6, 1000)):
        request = {"case": "imap_memory", "peer": peer.key, "workers": ctx.workers, "n": n, "chunksize": chunksize}
        run = procs.run_child(request, ctx.config.memory_timeout)
        if run.leaked:
            ctx.note(f"{peer.label} imap_memory: processes outlived the child (killed): {'; '.join(run.leaked)}")
        if run.result is None:
            status = "hang" if run.timed_out else f"error (child exited {run.returncode}: {_last_line(run.stderr)})"
            return Outcome.failed(status, n=n)
        if run.result["status"] != "ok":
            return Outcome.failed(run.result["status"], n=n)
        peaks.append(float(run.result["value"]))
    small, large = peaks
    return Outcome(large, detail={"small": small, "ratio": large / small, "chunksize": chunksize})


def startup_threaded(peer: PeerSpec, ctx: Context) -> Outcome:
    request = {"case": "startup_threaded", "peer": peer.key, "workers": ctx.workers}
    run = procs.run_child(request, ctx.config.child_timeout)
    if run.leaked:
        ctx.note(f"{peer.label} startup_threaded: processes outlived the child (killed): {'; '.join(run.leaked)}")
    if run.result is None:
        last = run.stages[-1] if run.stages else "start"
        if run.timed_out:
            return Outcome.failed("hang", after=last)
        return Outcome.failed(f"error (child exited {run.returncode} after {last}: {_last_line(run.stderr)})")
    detail: dict[str, float | str] = run.result.get("detail", {})
    for which in ("first", "second"):
        kept = detail.pop(f"kept_{which}", None)
        said = f"{peer.label} startup_threaded: still running 2 s after the {which} pool was closed (left alone)"
        if kept and not any(note.startswith(said) for note in ctx.notes):  # once: the pids vary
            ctx.note(f"{said}, first repeat: {kept}")
        fresh = detail.get(f"fresh_{which}")
        said = f"{peer.label} startup_threaded: fresh interpreters of the {which} pool"
        if fresh and not any(note.startswith(said) for note in ctx.notes):  # once: their arguments vary
            ctx.note(f"{said}, first repeat: {fresh}")
    if run.timed_out:
        detail["shutdown"] = "hung after the result"
    return Outcome(run.result.get("value"), run.result["status"], detail)


# Runs the timed imports alone in a fresh interpreter. Nothing is imported before them but
# what every interpreter loads at start (sys and time are built in); json comes after.
_IMPORT_SCRIPT = """\
import sys, time
loaded = len(sys.modules)
start = time.perf_counter()
{statement}
elapsed = time.perf_counter() - start
modules = len(sys.modules) - loaded
import json
print("RESULT " + json.dumps({{"status": "ok", "value": elapsed * 1000, "detail": {{"modules": modules}}}}), flush=True)
"""


def import_time(peer: PeerSpec, ctx: Context) -> Outcome:
    """The peer's imports timed inside a fresh ``python -c``, after one untimed run.

    Both runs keep their bytecode in a cache of their own (``PYTHONPYCACHEPREFIX``, writing
    allowed whatever ``PYTHONDONTWRITEBYTECODE`` says): the untimed run compiles, the timed
    one reads, as after an install, whatever state the checkout's ``__pycache__`` is in.
    """
    code = _IMPORT_SCRIPT.format(statement=peer.import_statement())
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="robustpool-bench-pycache-") as cache:
        environ: dict[str, str | None] = {"PYTHONPYCACHEPREFIX": cache, "PYTHONDONTWRITEBYTECODE": None}
        for _ in ("untimed", "timed"):
            run = procs.run_python(code, ctx.config.child_timeout, environ)
            if run.leaked:
                ctx.note(f"{peer.label} import: processes outlived the child (killed): {'; '.join(run.leaked)}")
            if run.result is None:
                if run.timed_out:
                    return Outcome.failed("hang", after="importing")
                return Outcome.failed(f"error (child exited {run.returncode}: {_last_line(run.stderr)})")
            result = run.result
    return Outcome(result.get("value"), result["status"], result.get("detail", {}))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


# -- summaries (the detail column) --------------------------------------------------------


def _no_detail(row: Row, ctx: Context) -> str:
    return ""


def _detail_values(row: Row, key: str) -> list[float | str]:
    return [o.detail[key] for o in row.outcomes if key in o.detail]


def _tiny_map_detail(row: Row, ctx: Context) -> str:
    sizes = _detail_values(row, "chunksize")
    return f"chunksize {sizes[0]}" if sizes else ""


_FASTER_RIVAL = "the faster thread peer"  # what a row's rivals are (only thread rows have them)


def _rival_part(row: Row) -> str:
    """The row's throughput relative to its fastest rival's, when every rival ran; else ""."""
    if not row.ratio_rival or not row.rival:
        return ""
    return f"{1 / row.ratio_rival:.2f}x the {row.unit} of {_FASTER_RIVAL} ({row.rival})"


def _per_item_detail(row: Row, ctx: Context) -> str:
    """Time per item and, for a row with rivals, its throughput relative to the faster one;
    on the Dask cluster, its start and steady rate, and its throughput relative to plain Dask's."""
    median = row.median
    if not median:
        return ""
    parts = (f"{1e6 / median:.0f} µs per item", _rival_part(row), *_cluster_parts(row))
    return "; ".join(part for part in parts if part)


def _peer_of(row: Row) -> PeerSpec | None:
    return next((spec for spec in PEERS.values() if spec.label == row.peer), None)


def _cluster_parts(row: Row) -> list[str]:
    """For a row on the Dask cluster: its ``n`` times plain Dask's throughput (or ms), and for
    an imap case the medians of its first result's time and of its second half's rate."""
    spec = _peer_of(row)
    if spec is None or spec.on_cluster is None:
        return []
    parts = []
    first, rest = _median_of(row, "first_ms"), _median_of(row, "second_half")
    if first is not None and rest is not None:
        parts.append(f"first result {format_value(first)} ms, second half {format_value(rest)} {row.unit}")
    if row.ratio_stdlib and row.reference == PEERS[DASK].label and row.peer != row.reference:
        times = 1 / row.ratio_stdlib if row.higher_is_better else row.ratio_stdlib
        parts.append(f"{times:.2f}x plain Dask's {row.unit}")
    return parts


def _calls_detail(row: Row, ctx: Context) -> str:
    """Time per call, the spread of the repeats, the speed-up over the stdlib reference and,
    for a row with rivals, over the faster of them (one part when that is the reference)."""
    median = row.median
    if not median:
        return ""
    parts = [f"{1e6 / median:.1f} µs per call"]
    values = row.values
    if len(values) > 1:
        parts.append(f"repeats {format_value(min(values))}-{format_value(max(values))}/s")
    rival = _rival_part(row)
    if row.ratio_stdlib and row.reference and row.reference != row.peer:
        against = f"{1 / row.ratio_stdlib:.2f}x the calls/s of {row.reference}"
        if rival and row.rival == row.reference:
            against, rival = f"{against}, {_FASTER_RIVAL}", ""
        parts.append(against)
    if rival:
        parts.append(rival)
    return "; ".join(parts)


def _cpu_detail(row: Row, ctx: Context) -> str:
    """The share of the ideal (workers x the calibrated serial speed); on the Dask cluster, also
    the share of its cores x the serial row's median, and its start and steady rate."""
    median = row.median
    if median is None or ctx.ideal_rate <= 0:
        return ""
    if row.peer == PEERS[SERIAL].label:
        return f"one process, no pool: {median * ctx.serial_task_s:.0%} of the calibrated serial speed"
    parts = [f"{median / ctx.ideal_rate:.0%} of ideal {ctx.ideal_rate:,.0f}/s"]
    serial = ctx.medians.get((row.case, PEERS[SERIAL].label))
    spec = _peer_of(row)
    if ctx.cluster is not None and spec is not None and spec.on_cluster is not None and serial:
        cores = ctx.cluster.cores
        parts.append(f"{median / (cores * serial):.2f} of cores x serial ({cores} x {format_value(serial)}/s)")
    parts += _cluster_parts(row)
    return "; ".join(parts)


def _cluster_detail(row: Row, ctx: Context) -> str:
    """Nothing on one machine; on the Dask cluster, the row against plain Dask."""
    return "; ".join(_cluster_parts(row))


def _recovery_detail(row: Row, ctx: Context) -> str:
    parts = []
    errors = sorted({str(e) for e in _detail_values(row, "task_error")})
    if errors:
        parts.append(f"killed task raised {', '.join(errors)}")
    after = _detail_values(row, "after")
    if after:
        parts.append(f"stuck {after[0]}")
    if _detail_values(row, "shutdown"):
        parts.append("shutdown hung after the result")
    return "; ".join(parts)


def _median_of(row: Row, key: str) -> float | None:
    """The median of a numeric detail over the row's successful repeats."""
    values = sorted(float(o.detail[key]) for o in row.outcomes if o.ok and isinstance(o.detail.get(key), int | float))
    return values[len(values) // 2] if values else None


def _startup_threaded_detail(row: Row, ctx: Context) -> str:
    """The owner's threads when the pool was built and the processes it had started by its
    first result (how many of them fresh interpreters), over the repeats."""
    which = "second" if row.case == STARTUP_THREADED_2ND else "first"
    threads = sorted({int(float(t)) for t in _detail_values(row, f"threads_{which}")})
    started = _median_of(row, f"started_{which}")
    fresh = sorted({len(str(f).split(" | ")) if f else 0 for f in _detail_values(row, f"fresh_{which}")})
    parts = []
    if threads:
        parts.append(f"owner threads {'/'.join(map(str, threads))}")
    if started is not None:
        parts.append(f"{started:.0f} processes started, {'/'.join(map(str, fresh))} fresh interpreter(s)")
    if _detail_values(row, "shutdown"):
        parts.append("shutdown hung after the result")
    return "; ".join(parts)


def _import_detail(row: Row, ctx: Context) -> str:
    spec = next((p for p in PEERS.values() if p.label == row.peer), None)
    modules = _median_of(row, "modules")
    statement = spec.import_statement() if spec is not None else ""
    return "; ".join(part for part in (statement, f"{modules:.0f} modules loaded" if modules is not None else "") if part)


# What leaving ``with pool:`` does, per peer (their own __exit__).
_EXIT_SEMANTICS = {
    ROBUSTPOOL: "__exit__: close() + join()",
    STDLIB: "__exit__: terminate()",
    PPE: "__exit__: shutdown(wait=True)",
    "loky": "__exit__: shutdown(wait=True)",
    "pebble": "__exit__: close() + join()",
    "mpire": "__exit__: terminate()",
}


def _exit_detail(row: Row, ctx: Context) -> str:
    return next((text for key, text in _EXIT_SEMANTICS.items() if PEERS[key].label == row.peer), "")


def _memory_detail(row: Row, ctx: Context) -> str:
    ok = [o for o in row.outcomes if o.ok]
    if not ok:
        return ""
    small = sorted(float(o.detail["small"]) for o in ok)[len(ok) // 2]
    large = row.median or 0.0
    n_small, n_large = ctx.config.size(10**4, 10), ctx.config.size(10**6, 1000)
    capped = " (input capped with islice: stdlib imap drains an infinite generator)" if row.peer == "mp.Pool" else ""
    return f"{n_small:,} items: {small:.1f} MiB; {n_large:,} items: {large:.1f} MiB; x{large / small:.2f}{capped}"


@dataclass(frozen=True)
class Part:
    """Another row of a case: the value under ``key`` in the detail of each of its repeats."""

    name: str  # the rows' case column
    key: str
    about: str


@dataclass(frozen=True)
class Case:
    """One benchmark: its measurement for one peer and repeat, and how to read the numbers."""

    name: str
    unit: str
    higher_is_better: bool
    about: str
    measure: Callable[[PeerSpec, Context], Outcome]
    summarize: Callable[[Row, Context], str] = _no_detail
    only_peers: tuple[str, ...] = ()  # empty: every peer (but a variant only in the cases it names)
    reference: str = STDLIB  # the "x stdlib" peer of the rows whose own twin did not run here
    thread_reference: str = THREADPOOL  # the same, for the rows of thread pools
    parts: tuple[Part, ...] = ()  # more rows of this case (summarized by ``summarize`` too)

    def runs(self, peer: PeerSpec) -> bool:
        """Whether ``peer`` is measured in this case."""
        if peer.only_cases and self.name not in peer.only_cases:
            return False
        return not self.only_peers or peer.key in self.only_peers


STARTUP_THREADED_2ND = "startup_threaded_2nd"
# The process pools (no variant, no thread pool): the peers of the start-up and shutdown cases.
PROCESS_PEERS = tuple(key for key, spec in PEERS.items() if not spec.threads and spec.variant_of is None and spec.group is None)

CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case("tiny_map", "items/s", True, "map(x*2, range(200_000)), default chunksize", tiny_map, _tiny_map_detail),
        Case(
            "tiny_imap_c1",
            "items/s",
            True,
            "imap(x*2, range(20_000), chunksize=1): per-task overhead",
            tiny_imap_c1,
            _per_item_detail,
        ),
        Case(
            "calls",
            "calls/s",
            True,
            "20,000 single calls f(i) (apply_async or submit) issued one by one, then every result taken",
            calls,
            _calls_detail,
        ),
        Case(
            "async_calls",
            "calls/s",
            True,
            "the same 20,000 calls issued from one coroutine as awaitables (PPE, TPE: loop.run_in_executor), gathered",
            async_calls,
            _calls_detail,
            only_peers=(
                *(p.key for p in (PEERS[ROBUSTPOOL], *variants(PEERS[ROBUSTPOOL]))),
                PPE,
                "loky",
                "pebble",
                *(p.key for p in (PEERS[ROBUSTTHREADPOOL], *variants(PEERS[ROBUSTTHREADPOOL]))),
                TPE,
            ),
            reference=PPE,
            thread_reference=TPE,
        ),
        Case(
            "roundtrip",
            "ms",
            False,
            "200 single calls f(i), one at a time: each issued (apply_async, submit) and its result taken before the next",
            roundtrip,
            _cluster_detail,
            only_peers=(ROBUSTDASK, DASK),
            reference=DASK,
        ),
        Case("cpu_1ms", "tasks/s", True, "2,000 tasks of ~1 ms pure-Python work, chunksize 1", cpu_1ms, _cpu_detail),
        Case("payload_1MB", "MiB/s", True, "300 tasks echoing 1 MiB of bytes, chunksize 1", payload_1mb),
        Case("startup", "ms", False, "pool construction to the first result of a trivial task", startup, _cluster_detail),
        Case(
            "startup_threaded",
            "ms",
            False,
            "startup in a fresh owner already running a second thread (idle on an Event): its first pool",
            startup_threaded,
            _startup_threaded_detail,
            only_peers=PROCESS_PEERS,
            parts=(
                Part(
                    STARTUP_THREADED_2ND,
                    "second",
                    "the same owner's second pool, built after the first was closed, the thread still alive",
                ),
            ),
        ),
        Case(
            "import",
            "ms",
            False,
            "the peer's import (from robustpool import RobustPool, ...) timed inside a fresh interpreter",
            import_time,
            _import_detail,
            only_peers=PROCESS_PEERS,
        ),
        Case(
            "exit",
            "ms",
            False,
            "leaving `with pool:` on a warm pool (every worker ran a task, results taken): each peer's own __exit__;"
            " mp.Pool's and mpire's terminate() their workers, the others close and join them",
            exit_with,
            _exit_detail,
            only_peers=PROCESS_PEERS,
        ),
        Case("recovery", "ms", False, "SIGKILL of a busy worker to the next trivial result", recovery, _recovery_detail),
        Case(
            "imap_memory",
            "MiB",
            False,
            "owner peak RSS, imap over 10^4 vs 10^6 items of an infinite generator",
            imap_memory,
            _memory_detail,
            only_peers=(ROBUSTPOOL, STDLIB),
        ),
    )
}


def calibrate_spin(target_s: float = 0.001) -> tuple[int, float]:
    """Loops of ``spin`` taking about ``target_s`` serially here, and the measured time per task.

    Each time is the best of 40 single tasks (the run least disturbed by other load on a
    shared machine), and the loop count is refined three times from the measured time.
    """
    loops = 1_000
    while _best_time(loops, 3) < 0.02:
        loops *= 2
    per_task = _best_time(loops, 3)
    for _ in range(3):
        loops = max(1, round(loops * target_s / per_task))
        per_task = _best_time(loops, 40)
    return loops, per_task


def _best_time(loops: int, samples: int) -> float:
    best = float("inf")
    for _ in range(samples):
        start = time.perf_counter()
        spin(loops)
        best = min(best, time.perf_counter() - start)
    return best


def prepare(config: Config, cases: list[Case], thread_baseline: int, cluster: Cluster | None = None) -> Context:
    """Build the shared context: calibrate ``spin`` and make the payload, if those cases run."""
    ctx = Context(config, thread_baseline, cluster=cluster)
    names = {case.name for case in cases}
    if "cpu_1ms" in names:
        ctx.spin_loops, ctx.serial_task_s = calibrate_spin()
        ctx.spin_result = spin(ctx.spin_loops)
        ctx.note(
            f"cpu_1ms: spin({ctx.spin_loops:,}) takes {ctx.serial_task_s * 1000:.2f} ms serially here (best of 40);"
            f" ideal = {ctx.workers} workers x serial speed = {ctx.ideal_rate:,.0f} tasks/s"
        )
    if "payload_1MB" in names:
        ctx.payload = os.urandom(MIB)
    return ctx
