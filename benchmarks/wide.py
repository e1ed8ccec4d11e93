"""Wide pools: how robustpool behaves with many more workers than cores.

``python -m benchmarks.wide [--workers 128] [--tasks 1280] [--idle 10] [--repeats 3]``

For each repeat (robustpool and ``multiprocessing.Pool`` alternate, in fresh child
processes so one run's leftovers cannot slow the next), it reports:

* ``start``: construction until 2 x ``workers`` tasks of 50 ms each are done (a pool short of
  workers, or slow to start them, takes longer; ``distinct_workers`` says how many served);
* ``tasks``: ``map(noop, range(tasks), chunksize=1)`` on that warm pool;
* ``idle cpu``: CPU seconds (user + system) the supervisor used over ``idle`` seconds of an
  idle pool (robustpool only: the standard library has no supervisor).

Medians are printed last; on this noisy machine compare the two pools within one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time


def noop(x: int) -> int:
    return x


def _pid(_: int) -> int:
    time.sleep(0.05)  # long enough that every worker takes one
    return os.getpid()


def _measure(kind: str, workers: int, tasks: int, idle: float) -> dict[str, float]:
    import psutil

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    if kind == "robustpool":
        from robustpool import RobustPool

        pool = RobustPool(workers, task_timeout=60)
    else:
        pool = multiprocessing.get_context("fork").Pool(workers)  # type: ignore[assignment]
    try:
        pids = {r.get(timeout=300) for r in [pool.apply_async(_pid, (i,)) for i in range(workers * 2)]}
        out["start"] = time.perf_counter() - t0
        out["distinct_workers"] = len(pids)
        t1 = time.perf_counter()
        assert pool.map(noop, range(tasks), chunksize=1) == list(range(tasks))
        out["tasks"] = time.perf_counter() - t1
        if kind == "robustpool" and idle > 0:
            sup = psutil.Process(pool.supervisor_pid)
            before = sup.cpu_times()
            time.sleep(idle)
            after = sup.cpu_times()
            out["idle_cpu"] = (after.user - before.user) + (after.system - before.system)
    finally:
        t2 = time.perf_counter()
        pool.close()
        pool.join()
        out["exit"] = time.perf_counter() - t2
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.wide", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=128)
    ap.add_argument("--tasks", type=int, default=1280)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle pool to measure the supervisor's CPU over")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child, args.workers, args.tasks, args.idle)))
        return 0
    runs: dict[str, list[dict[str, float]]] = {"robustpool": [], "mp.Pool": []}
    for rep in range(args.repeats):
        for kind in ("robustpool", "mp.Pool"):
            cmd = [sys.executable, "-m", "benchmarks.wide", "--child", kind, "--workers", str(args.workers)]
            cmd += ["--tasks", str(args.tasks), "--idle", str(args.idle)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                print(f"repeat {rep} {kind}: TIMEOUT (600 s)")
                continue
            if proc.returncode != 0:
                print(f"repeat {rep} {kind}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}")
                continue
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[kind].append(got)
            print(f"repeat {rep} {kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in got.items()), flush=True)
    print(f"--- medians ({args.workers} workers, {args.tasks} tasks, {os.cpu_count()} cores) ---")
    for kind, rows in runs.items():
        if rows:
            keys = rows[0].keys()
            print(f"{kind}: " + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
