"""``python -m robustpool demo``: a pipeline in which a worker is killed mid-run.

It maps a small function over 20 items with ``imap``. Item 7 makes its worker SIGKILL
itself, the way the kernel's OOM killer would. The standard library's pool hangs forever at
that point; robustpool reports one attributed WorkerLostError, delivers the 19 other items
and keeps working.
"""

from __future__ import annotations

import os
import signal
import time

from ._errors import WorkerLostError
from ._pool import RobustPool

DOOMED = 7


def work(x: int) -> int:
    """Square ``x`` slowly; on the doomed item the worker dies like an OOM victim."""
    if x == DOOMED:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.02)
    return x * x


def run(items: int = 20) -> int:
    print(f"robustpool demo: imap over {items} items on 2 workers; item {DOOMED} SIGKILLs its worker.\n")
    delivered: list[int] = []
    lost: list[WorkerLostError] = []
    start = time.monotonic()
    with RobustPool(2) as pool:
        it = pool.imap(work, range(items))
        for i in range(items):
            try:
                value = next(it)
            except WorkerLostError as err:
                lost.append(err)
                print(f"  item {i:2d}: WorkerLostError\n           {err}")
                continue
            delivered.append(value)
            print(f"  item {i:2d}: {value}")
        after = pool.apply(work, (12,))
        pids = pool.worker_pids()
    elapsed = time.monotonic() - start
    print(f"\n{len(delivered)} results delivered, {len(lost)} attributed failure, in {elapsed:.2f} s.")
    print(f"The pool carried on: a new task after the crash returned {after}, workers now {pids}.")
    ok = len(delivered) == items - 1 and len(lost) == 1 and lost[0].task_index == DOOMED
    return 0 if ok else 1
