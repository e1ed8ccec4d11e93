"""One pool per resource, one scope over all of them (docs/threads.md).

A spinning disk serves one reader well, an SSD many, and the CPU work goes to processes:
three pools, each with its own parallelism, and a multi_scope that waits for every task
started in it. Each task records which worker ran it and how many of its pool's tasks ran
at that moment; the script prints, per pool, the distinct workers and the most at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

from robustpool import RobustPool, RobustThreadPool, multi_scope

_lock = threading.Lock()
_now: dict[str, int] = defaultdict(int)
_peak: dict[str, int] = defaultdict(int)
_workers: dict[str, set[int]] = defaultdict(set)


def _io(kind: str, name: str, seconds: float) -> str:
    """Stand-in for reading a file: records the thread and the concurrency of its pool."""
    with _lock:
        _now[kind] += 1
        _peak[kind] = max(_peak[kind], _now[kind])
        _workers[kind].add(threading.get_ident())
    time.sleep(seconds)
    with _lock:
        _now[kind] -= 1
    return f"{kind}:{name}"


def checksum(text: str) -> tuple[int, int]:
    """CPU work, in a worker process: (its pid, a checksum)."""
    return os.getpid(), sum(ord(c) * (i + 1) for i, c in enumerate(text * 2000)) % 65521


def main() -> None:
    with RobustThreadPool(1) as disk, RobustThreadPool(8) as ssd, RobustPool(2) as cpu:
        with multi_scope(disk, ssd, cpu) as (d, s, c):
            reads = [d.submit(_io, "disk", f"movie-{k}.mkv", 0.02) for k in range(6)]
            reads += [s.submit(_io, "ssd", f"photo-{k}.jpg", 0.02) for k in range(40)]
            sums = [c.submit(checksum, f"block-{k}") for k in range(8)]
        # Leaving the scope waited for all 54 tasks.
        assert all(f.done() for f in reads + sums)
        pids = {f.result()[0] for f in sums}
        print(f"disk: {len(_workers['disk'])} thread, at most {_peak['disk']} at once (pool of {disk.processes})")
        print(f"ssd: {len(_workers['ssd'])} threads, at most {_peak['ssd']} at once (pool of {ssd.processes})")
        assert pids <= set(cpu.worker_pids())
        print(f"cpu: {len(pids)} worker processes (pool of {cpu.processes})")
        print(f"{len(reads)} reads and {len(sums)} checksums done")

        # A failure cancels what has not started and is raised with the others, together.
        try:
            with multi_scope(disk, cpu) as (d, c):
                slow = [d.submit(_io, "disk", f"archive-{k}.tar", 0.05) for k in range(10)]
                c.submit(checksum, None)  # type: ignore[arg-type]  # a TypeError in the worker
        except ExceptionGroup as group:
            failed = [type(e).__name__ for e in group.exceptions]
            cancelled = sum(f.cancelled() for f in slow)
            print(f"scope failed: {failed}; {cancelled} disk reads cancelled before they started")


if __name__ == "__main__":
    main()
