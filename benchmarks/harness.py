"""The runner: every selected case, every peer, round-robin within each repeat, in one run.

For each case, repeat ``r`` runs the peers in the order rotated by ``r`` (so no peer always
goes first and slow drift on the machine hits every peer alike). A peer that hangs or
breaks in a case is not run again in that case. Each measurement is bounded by a deadline.
The medians are then compared with the best peer and with the standard library: each peer's
``twin`` (``multiprocessing.Pool``, or ``ProcessPoolExecutor`` for robustpool's
concurrent.futures variants) when it ran in the case, else the case's ``reference``.

Thread pools are ranked among themselves: "x best" is the best thread pool's median, and
their twins and the case's ``thread_reference`` are the standard library's thread pools
(``ThreadPool`` for ``RobustThreadPool``, ``ThreadPoolExecutor`` for
``RobustThreadPoolExecutor``). A thread pool skips the GIL-bound, pickling and worker-killing
cases, and per call it costs a fraction of a process pool, so a process row ranked against a
thread row would say nothing about either; the process rows read the same with or without
thread pools in the run. A row with ``rivals`` (robustpool's thread pools) is also compared
with the faster of them, when all ran: the issue asks for at least the faster one's speed.

A case's ``parts`` become rows of their own after the case's rows, ranked in the same way,
from a value every repeat left in its detail (a repeat without it fails in that row).

A run with a Dask peer (``--dask``, or one named in ``--peers``) starts one LocalCluster
before its first case and closes it after its last (``cluster.started_for``); the Dask rows'
"x stdlib" is against plain Dask on that cluster (their ``twin``). A case that none of the
run's peers runs is left out.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from . import cluster, procs
from .cases import CASES, CLUSTER_SIZES, Case, Context, Part, prepare
from .config import Config
from .deadline import DeadlineExceeded, deadline
from .machine import describe
from .peers import DASK_GROUP, PEERS, PPE, THREAD_CASES, PeerSpec, resolve, variants
from .results import Outcome, Report, Row


def select_cases(names: tuple[str, ...]) -> list[Case]:
    if not names:
        return list(CASES.values())
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise KeyError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    return [CASES[n] for n in CASES if n in names]


def select_peers(names: tuple[str, ...], notes: list[str], groups: tuple[str, ...] = ()) -> list[PeerSpec]:
    """The requested peers (by default: those of ``groups`` if any, else every peer of no group)
    and their variants that are installed; a note for each one skipped."""
    wanted: list[PeerSpec] = []
    default = [spec for spec in PEERS.values() if (spec.group in groups if groups else spec.group is None)]
    for spec in [resolve(n) for n in names] if names else default:
        for one in (spec, *variants(spec)):
            if one not in wanted:
                wanted.append(one)
    chosen = []
    for spec in wanted:
        reason = spec.missing()
        if reason is not None:
            notes.append(f"{spec.label}: skipped, {reason}")
            continue
        spec.load()
        chosen.append(spec)
    return chosen


def measure(case: Case, peer: PeerSpec, ctx: Context) -> Outcome:
    """One repeat of ``case`` for ``peer``, bounded by the case deadline; failures become outcomes."""
    limit = ctx.config.case_timeout
    try:
        with deadline(limit, f"{case.name} for {peer.label}"):
            return case.measure(peer, ctx)
    except DeadlineExceeded:
        return Outcome.failed("hang", after=f"in-process measurement exceeded {limit:g} s")
    except Exception as exc:
        message = " ".join(str(exc).split())[:160]
        return Outcome.failed(f"error ({type(exc).__name__}: {message})")


def _stops_repeats(outcome: Outcome) -> bool:
    return outcome.status == "hang" or outcome.status.startswith("broken")


def _progress(out: TextIO | None, text: str) -> None:
    if out is not None:
        print(text, file=out, flush=True)


def run(config: Config, progress: TextIO | None = sys.stderr) -> Report:
    """Run the harness and return its Report (nothing is printed but progress); with a Dask
    peer, on a LocalCluster started for the run and closed at its end."""
    notes: list[str] = []
    _compile_robustpool(notes)
    peers = select_peers(config.peers, notes, (DASK_GROUP,) if config.dask else ())
    cases = [case for case in select_cases(config.cases) if any(case.runs(peer) for peer in peers)]
    with cluster.started_for(peers, config.workers, notes) as dask:
        return _run(config, cases, peers, notes, dask, progress)


def _compile_robustpool(notes: list[str]) -> None:
    """Write robustpool's bytecode before the run, as pip does at install for every peer.

    An editable install keeps robustpool's sources in the checkout, and where nothing wrote
    their bytecode (``PYTHONDONTWRITEBYTECODE``, ``-B``), every fresh child of the run would
    compile robustpool's process engine inside its timed first pool, and no peer's."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("robustpool")
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        if not compileall.compile_dir(location, quiet=1):
            notes.append(f"robustpool: its bytecode could not all be written under {location}")


def _run(
    config: Config,
    cases: list[Case],
    peers: list[PeerSpec],
    notes: list[str],
    dask: cluster.Cluster | None,
    progress: TextIO | None,
) -> Report:
    started = time.monotonic()
    # The thread baseline is taken after the cluster's client started its own threads.
    ctx = prepare(config, cases, procs.thread_count(), dask)
    machine = describe(peers)
    rows: list[Row] = []
    for case in cases:
        case_peers = [p for p in peers if case.runs(p)]
        case_rows = {p.key: Row(case.name, p.label, case.unit, case.higher_is_better) for p in case_peers}
        stopped: set[str] = set()
        repeats = config.repeats_for(case.name)
        for r in range(repeats):
            shift = r % len(case_peers) if case_peers else 0
            for peer in case_peers[shift:] + case_peers[:shift]:
                if peer.key in stopped:
                    continue
                outcome = measure(case, peer, ctx)
                case_rows[peer.key].outcomes.append(outcome)
                if _stops_repeats(outcome):
                    stopped.add(peer.key)
                shown = f"{outcome.value:,.1f} {case.unit}" if outcome.ok and outcome.value is not None else outcome.status
                _progress(progress, f"[{time.monotonic() - started:6.1f}s] {case.name} {r + 1}/{repeats} {peer.label}: {shown}")
        for part_rows in (case_rows, *(_part_rows(case_rows, part) for part in case.parts)):
            _rank(part_rows, {p.key: p for p in case_peers}, case)
            ctx.medians.update({(row.case, row.peer): row.median for row in part_rows.values() if row.median is not None})
            for row in part_rows.values():
                row.detail = case.summarize(row, ctx)
            rows += part_rows.values()
    notes += _standard_notes(cases, peers, ctx)
    notes += list(ctx.notes)
    about = {name: text for case in cases for name, text in ((case.name, case.about), *((p.name, p.about) for p in case.parts))}
    return Report(rows, machine, notes, time.monotonic() - started, about)


def _part_rows(rows: dict[str, Row], part: Part) -> dict[str, Row]:
    """The rows of ``part``: each repeat's value under ``part.key``, its failures as they were."""
    out = {}
    for key, row in rows.items():
        outcomes = []
        for o in row.outcomes:
            value = o.detail.get(part.key)
            if not o.ok:
                outcomes.append(Outcome(None, o.status, o.detail))
            elif isinstance(value, int | float):
                outcomes.append(Outcome(float(value), detail=o.detail))
            else:
                outcomes.append(Outcome(None, f"error (no {part.key} value)", o.detail))
        out[key] = Row(part.name, row.peer, row.unit, row.higher_is_better, outcomes)
    return out


def _best(rows: list[Row]) -> Row | None:
    """The row with the best median (None when none has one)."""
    ranked = [row for row in rows if row.median is not None]
    if not ranked:
        return None
    pick = max if ranked[0].higher_is_better else min
    return pick(ranked, key=lambda row: row.median or 0.0)


def _rank(rows: dict[str, Row], peers: dict[str, PeerSpec], case: Case) -> None:
    """Fill in each row's ratios: to the best median of its kind (process or thread pools), to
    its stdlib twin's (or the case's reference of its kind), and to its fastest rival's."""
    for threads in (False, True):
        kind = {key: row for key, row in rows.items() if peers[key].threads is threads}
        best = _best(list(kind.values()))
        if best is None:
            continue
        for key, row in kind.items():
            spec = peers[key]
            row.ratio_best = row.slowdown(best.median)
            stdlib = rows.get(spec.twin) or rows.get(case.thread_reference if threads else case.reference)
            if stdlib is not None:
                row.reference = stdlib.peer
                row.ratio_stdlib = row.slowdown(stdlib.median)
            rivals = [rows.get(rival) for rival in spec.rivals]
            ran = [rival for rival in rivals if rival is not None and rival.median is not None]
            fastest = _best(ran)
            if spec.rivals and len(ran) == len(spec.rivals) and fastest is not None:
                row.rival = fastest.peer
                row.ratio_rival = row.slowdown(fastest.median)


def _standard_notes(cases: list[Case], peers: list[PeerSpec], ctx: Context) -> list[str]:
    names = {case.name for case in cases}
    notes = [f"{ctx.workers} workers for every pool; a fresh pool per repeat, warmed on every worker first (except startup)"]
    if ctx.config.scale != 1:
        notes.append(f"every workload size is scaled by {ctx.config.scale:g} (the case descriptions give the full sizes)")
    if "tiny_map" in names:
        no_default = [p.label for p in peers if not p.default_chunksize]
        if no_default:
            n = ctx.config.size(200_000, 100)
            verb, pronoun = ("defaults", "it was") if len(no_default) == 1 else ("default", "they were")
            notes.append(
                f"tiny_map: {', '.join(no_default)} {verb} to chunksize 1; {pronoun} given multiprocessing's default"
                f" ceil(n / (4 x workers)) = {-(-n // (4 * ctx.workers)):,}; the others used their own default"
            )
    # The process peers' APIs (the thread pools' are in _thread_notes).
    processes = any(not p.threads and p.group is None for p in peers)
    if processes and names & {"tiny_imap_c1", "cpu_1ms", "payload_1MB"}:
        notes.append(
            "chunksize-1 cases: Pool.imap (robustpool, mp.Pool), Executor.map(chunksize=1) (PPE, loky),"
            " pool.map(chunksize=1).result() (pebble), WorkerPool.imap(chunk_size=1) (mpire)"
        )
    if processes and names & {"calls", "async_calls"}:
        twins = [p.label for p in peers if p.twin == PPE]
        notes.append(
            "calls: f(i) = i issued one by one, the peer's handles kept, then every result taken: apply_async + get"
            " (robustpool, mp.Pool, mpire), submit + result (robustpool.submit = RobustPool.submit, RobustExecutor, PPE, loky),"
            " schedule + result (pebble)"
        )
        if twins:
            notes.append(f"calls cases: x stdlib of {' and '.join(twins)} is against PPE (the same concurrent.futures API)")
    if processes and "async_calls" in names:
        notes.append(
            "async_calls: inside one asyncio.run, asyncio.gather of the awaitables issued one by one: robustpool's"
            " AsyncResult / RobustFuture awaited as they are; loop.run_in_executor(executor, f, i) for PPE and loky;"
            " asyncio.wrap_future(schedule(...)) for pebble; x stdlib is against PPE (mp.Pool and mpire have no awaitable call)"
        )
    if ctx.cluster is not None:
        notes += _cluster_notes(names, ctx)
    if "recovery" in names:
        notes.append(
            f"recovery: in a fresh child per repeat (limit {ctx.config.recovery_timeout:g} s): warm pool, a task SIGKILLs its"
            " worker, its error is awaited, then one trivial task; time from the kill to that result"
        )
    if "startup_threaded" in names:
        notes.append(
            f"startup_threaded: in a fresh child per repeat (limit {ctx.config.child_timeout:g} s) that imports the peer"
            " (as a program does at its top), then starts a"
            " second Python thread, idle on an Event until both pools are done: its first pool (construction to the first"
            " trivial result, then closed), then, once that pool's processes and threads are gone (bounded wait), a second"
            " pool timed the same way (row startup_threaded_2nd); the detail counts the processes each pool had started by"
            " then and how many were fresh interpreters (a command line other than their parent's) rather than forks;"
            " robustpool's forkserver is forked at that import, before the thread (robustpool._zygote), so it is not among"
            " the processes its first pool started"
        )
    if "import" in names:
        notes.append(
            f"import: a fresh `python -c` per repeat (limit {ctx.config.child_timeout:g} s), perf_counter around the"
            " peer's import statement (the detail), nothing imported before it; each after an untimed run that compiled"
            " the bytecode into a cache of its own (PYTHONPYCACHEPREFIX), so the timed run reads it as after an install;"
            " mp.Pool's import includes multiprocessing.pool, which multiprocessing.Pool() imports"
            " at its first call; the detail also gives how many modules the import loaded"
        )
    if "exit" in names:
        notes.append(
            "exit: a fresh pool, `with pool:` around a warm-up (every worker ran a task, every result taken), then the time"
            " from the block's last statement to just after __exit__ returned; each peer's own __exit__ (the detail):"
            " mp.Pool's is terminate() (its workers are stopped at once, not closed) and so is mpire's; the others close"
            " the pool and wait for their workers to exit"
        )
    if names & {"startup_threaded", "import", "exit"}:
        notes.append("startup_threaded, import, exit: process pools only (the thread pools start no process)")
    if "imap_memory" in names:
        notes.append(
            f"imap_memory: peak RSS (VmHWM) of a fresh owner process per run, chunksize {ctx.config.size(100)};"
            " the value is the large run, the detail has both"
        )
    threads = [p.label for p in peers if p.threads]
    thread_cases = [name for name in THREAD_CASES if name in names]
    if threads and thread_cases:
        notes += _thread_notes(threads, thread_cases, mixed=processes)
    for spec in peers:
        notes += spec.notes
    notes.append("ratios are slowdown factors: 1.00 = as good as the reference, 2.00 = half as good (time, MiB or 1/throughput)")
    return notes


def _cluster_notes(names: set[str], ctx: Context) -> list[str]:
    """How the Dask peers are called, sized and compared (``names``: the run's cases)."""
    sized = ", ".join(f"{case} {ctx.config.size(n):,}" for case, n in CLUSTER_SIZES.items() if case in names)
    notes = [
        "on the Dask cluster: robustpool-dask is RobustPool(engine=DaskEngine(client)) (Pool.imap, apply_async + get);"
        " dask is plain Dask on the same client, one Dask task per item or call: client.map(f, items, pure=False) with"
        " the results taken in order as they complete (as_completed), client.submit(f, x, pure=False) + result();"
        " their x stdlib is against dask; their pools are warmed with single calls"
    ]
    if sized:
        notes.append(
            f"items on the Dask cluster (both Dask peers alike): {sized}; the harness's own sizes would keep plain Dask,"
            " at a few hundred tasks/s, a minute per repeat"
        )
    if "cpu_1ms" in names:
        notes.append(
            f"cpu_1ms on the Dask cluster: cores x serial is the cluster's {ctx.cluster.cores if ctx.cluster else 0} worker"
            " threads x the serial row's median (the same tasks in a plain loop in the owner, measured in the same repeats);"
            " the cluster's scheduler, the owner and the Dask workers share this machine's cores"
        )
    if names & {"tiny_imap_c1", "cpu_1ms"}:
        notes.append(
            "tiny_imap_c1, cpu_1ms on the Dask cluster: the detail gives the medians of the first result's time and of the"
            " rate over the second half of the items (the pool's start against its steady rate)"
        )
    if "startup" in names:
        notes.append(
            "startup on the Dask cluster: on the run's client, whose Dask workers have hosted earlier pools; plain Dask has"
            " no pool to build, so its row is its first call's round trip"
        )
    return notes


def _thread_notes(threads: list[str], cases: list[str], *, mixed: bool) -> list[str]:
    """How the thread pools (``threads``, their labels) are called and compared in ``cases``
    (the thread cases of the run); ``mixed``: process pools ran too."""
    ranked = "; x best of a thread pool is against the best thread pool, of a process pool the best process pool"
    ranked = ranked if mixed else ""
    notes = [
        f"thread pools ({', '.join(threads)}): threads of the owner, nothing pickled; they run in {', '.join(THREAD_CASES)} only"
        " (recovery's task SIGKILLs its worker, the owner itself on threads; cpu_1ms would measure the GIL;"
        f" payload_1MB passes the bytes by reference){ranked}; x stdlib is against ThreadPool for RobustThreadPool"
        " and TPE, against TPE for RobustThreadPoolExecutor"
    ]
    if "async_calls" in cases:
        notes[0] += " (and for every thread pool in async_calls, where ThreadPool has no awaitable call)"
    notes.append(
        "thread pools' APIs: apply_async + get, Pool.imap and Pool.map (RobustThreadPool, ThreadPool); submit + result"
        " (RobustThreadPoolExecutor, TPE); Executor.map(chunksize=) (TPE); awaited: AsyncResult / RobustFuture as they are,"
        " loop.run_in_executor(executor, f, i) for TPE"
    )
    if {"calls", "tiny_imap_c1"} & set(cases):
        notes.append(
            "calls, tiny_imap_c1: the detail of RobustThreadPool and RobustThreadPoolExecutor gives their calls/s (items/s)"
            " relative to the faster of ThreadPool and TPE in this run, when both ran (1.00 or more: at least on par)"
        )
    return notes
