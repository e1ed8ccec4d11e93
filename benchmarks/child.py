"""The isolated measurements, run as ``python -m benchmarks.child '<json request>'``.

``recovery`` and ``imap_memory`` run here, in a fresh interpreter per measurement: a peer may
hang or break for good after a worker is killed, and peak RSS is per process. The child
prints ``STAGE <text>`` lines as it goes (so a hang can be located) and one
``RESULT <json>`` line; the parent (``procs.run_child``) bounds it with a timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
import time
from typing import Any

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


def main(argv: list[str]) -> int:
    request = json.loads(argv[1])
    spec = PEERS[request["peer"]]
    spec.load()
    if request["case"] == "recovery":
        recovery(spec, int(request["workers"]))
    elif request["case"] == "imap_memory":
        imap_memory(spec, int(request["workers"]), int(request["n"]), int(request["chunksize"]))
    else:
        raise SystemExit(f"unknown case {request['case']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
