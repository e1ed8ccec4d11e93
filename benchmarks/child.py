"""The isolated measurements, run as ``python -m benchmarks.child '<json request>'``.

``recovery``, ``imap_memory`` and ``startup_threaded`` run here, in a fresh interpreter per
measurement: a peer may hang or break for good after a worker is killed, peak RSS is per
process, and the first pool of a process is only the first once. The child
prints ``STAGE <text>`` lines as it goes (so a hang can be located) and one
``RESULT <json>`` line; the parent (``procs.run_child``) bounds it with a timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

from . import procs
from .cases import warm_up
from .peers import PEERS, ROBUSTPOOL, PeerSpec, PoolHandle
from .work import double, kill_self, noop

MIB = 1 << 20


def stage(text: str) -> None:
    print(f"STAGE {text}", flush=True)


def emit(result: dict[str, Any]) -> None:
    print(f"RESULT {json.dumps(result)}", flush=True)


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss, it is not inherited from the parent."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB


def close(pool: PoolHandle, graceful: bool) -> None:
    if graceful:
        pool.close()
    else:
        pool.kill()


def recovery(spec: PeerSpec, workers: int) -> None:
    """Warm pool; a task SIGKILLs its worker; time from the kill to the next trivial result."""
    pool = spec.factory(workers)
    graceful = False
    try:
        stage("warming the pool")
        warm_up(pool, workers)
        with tempfile.TemporaryDirectory(prefix="robustpool-bench-") as tmp:
            stamp = os.path.join(tmp, "killed-at")
            killer = pool.submit(kill_self, stamp)
            stage("waiting for the killed task's result")
            try:
                killer.get()
            except Exception as exc:
                task_error = type(exc).__name__
            else:
                emit({"status": "error (the killer task returned a value)", "value": None, "detail": {}})
                return
            stage(f"waiting for a trivial task after the killed one raised {task_error}")
            try:
                value = pool.apply(noop, 1)
                done = time.monotonic()
            except Exception as exc:
                emit({"status": f"broken ({type(exc).__name__})", "value": None, "detail": {"task_error": task_error}})
                return
            with open(stamp, encoding="ascii") as f:
                killed = float(f.read())
            if value != 1:
                emit({"status": f"error (trivial task returned {value!r})", "value": None, "detail": {}})
                return
            emit({"status": "ok", "value": (done - killed) * 1000, "detail": {"task_error": task_error}})
            graceful = True
    finally:
        stage("closing the pool")
        close(pool, graceful)


def imap_memory(spec: PeerSpec, workers: int, n: int, chunksize: int) -> None:
    """imap of ``double`` over an infinite generator, ``n`` results consumed; report peak RSS."""
    pool = spec.factory(workers)
    graceful = False
    try:
        if spec.key == ROBUSTPOOL:
            # robustpool reads its input lazily: hand it the infinite generator itself.
            results = pool.imap(double, itertools.count(), chunksize)
            total = sum(itertools.islice(results, n))
            getattr(results, "close", lambda: None)()
        else:
            # The standard library's imap drains its input eagerly: cap the input instead.
            total = sum(pool.imap(double, itertools.islice(itertools.count(), n), chunksize))
        peak = peak_rss_mib()
        if total != n * (n - 1):
            emit({"status": "error (imap returned wrong results)", "value": None})
            return
        emit({"status": "ok", "value": peak})
        graceful = True
    finally:
        close(pool, graceful)


def startup_threaded(spec: PeerSpec, workers: int) -> None:
    """In an owner already running a second thread (idle, blocked on an Event): build a pool,
    time construction to its first trivial result, close it; then the same for a second pool.

    Between the pools the first one's threads and processes are given time to go (bounded);
    processes still alive then are left running (a peer may keep a helper, such as a
    forkserver, for the owner's life) and reported. Nothing is killed here: the parent kills
    whatever outlives this process.
    """
    stop = threading.Event()
    idle = threading.Thread(target=stop.wait, name="benchmarks-idle-thread", daemon=True)
    idle.start()
    baseline = procs.thread_count()
    result: dict[str, Any] = {"status": "ok", "value": None, "detail": {}}
    try:
        for which in ("first", "second"):
            before = procs.children()
            result["detail"][f"threads_{which}"] = procs.settle_threads(baseline)
            stage(f"building the {which} pool")
            elapsed, started, fresh, problem = _time_first_result(spec, workers)
            if problem is not None:
                result.update(status=problem, value=None)
                result["detail"]["failed"] = which
                break
            result["detail"].update({f"started_{which}": started, f"fresh_{which}": " | ".join(fresh)})
            if which == "first":
                result["value"] = elapsed * 1000
            else:
                result["detail"]["second"] = elapsed * 1000
            stage(f"waiting for the {which} pool's processes to exit")
            kept = procs.wait_children(before)
            if kept:
                result["detail"][f"kept_{which}"] = "; ".join(kept)
    finally:
        stop.set()
        idle.join(5.0)
    emit(result)


def _time_first_result(spec: PeerSpec, workers: int) -> tuple[float, int, list[str], str | None]:
    """Seconds from construction to the first result of ``noop``, the processes the pool had
    started then (and the fresh interpreters among them), and a failure status, if any."""
    before = procs.children()
    start = time.perf_counter()
    pool = spec.factory(workers)
    graceful = False
    try:
        value = pool.apply(noop, 7)
        elapsed = time.perf_counter() - start
        started, fresh = procs.started_since(before)
        if value != 7:
            return elapsed, started, fresh, f"error (noop returned {value!r})"
        graceful = True
        return elapsed, started, fresh, None
    except Exception as exc:
        return 0.0, 0, [], f"error ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    finally:
        stage("closing the pool")
        close(pool, graceful)


def main(argv: list[str]) -> int:
    request = json.loads(argv[1])
    spec = PEERS[request["peer"]]
    spec.load()
    if request["case"] == "recovery":
        recovery(spec, int(request["workers"]))
    elif request["case"] == "imap_memory":
        imap_memory(spec, int(request["workers"]), int(request["n"]), int(request["chunksize"]))
    elif request["case"] == "startup_threaded":
        startup_threaded(spec, int(request["workers"]))
    else:
        raise SystemExit(f"unknown case {request['case']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
