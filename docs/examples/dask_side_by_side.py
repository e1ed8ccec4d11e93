"""Plain Dask and robustpool on Dask, side by side, at a SIGKILL.

One ``LocalCluster`` of 2 Dask worker processes (one thread each, loopback only). The same
20 items run twice on it: first as plain Dask tasks (``client.map``, then each future's
result, all within one deadline), then through ``RobustPool(engine=DaskEngine(client))``.
Item 5 SIGKILLs its own process, as the OOM killer would; the others sleep 50 ms and return
their square. Every run of an item appends a line to that item's file, so the script also
counts how many times each item ran. For each half it prints what happened to every item,
and the Dask workers (address and pid) before and after. Run it:

    python docs/examples/dask_side_by_side.py
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from distributed import Client, LocalCluster

from robustpool import RobustPool
from robustpool.dask import DaskEngine

ITEMS = 20
CULPRIT = 5
DEADLINE = 60.0  # seconds for all 20 outcomes of one half; an item with none by then has "no outcome"

Outcome = tuple[bool, str]  # (True, the value's repr) or (False, the error on one line)


def work(item: tuple[int, str]) -> int:
    """Note this run in the item's file; item 5 then SIGKILLs its own process."""
    i, runs = item
    with (Path(runs) / f"{i}.runs").open("a") as f:
        f.write(f"{os.getpid()}\n")
    if i == CULPRIT:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return i * i


def plain_dask(client: Client, items: list[tuple[int, str]]) -> list[Outcome]:
    futures = client.map(work, items, pure=False)  # pure=False: every item a task of its own
    end = time.monotonic() + DEADLINE
    return [outcome(f.result, end) for f in futures]


def robustpool_on_dask(client: Client, items: list[tuple[int, str]]) -> list[Outcome]:
    with RobustPool(engine=DaskEngine(client)) as pool:
        results = pool.imap(work, items)
        end = time.monotonic() + DEADLINE
        return [outcome(results.next, end) for _ in items]


def main() -> None:
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",  # loopback only
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,  # Dask's own log: errors only, on stderr
    )
    with cluster, Client(cluster) as client:
        show("plain Dask: client.map(work, items, pure=False)", client, plain_dask)
        show("robustpool on Dask: RobustPool(engine=DaskEngine(client)).imap(work, items)", client, robustpool_on_dask)


def outcome(get: Callable[[float], object], end: float) -> Outcome:
    """One item's outcome: ``get(seconds)`` returns its value or raises its error."""
    try:
        return True, repr(get(max(end - time.monotonic(), 0.01)))
    except (TimeoutError, multiprocessing.TimeoutError):  # Dask's wait ran out, or the pool's
        return False, f"no outcome within {DEADLINE:.0f} s"
    except Exception as exc:
        return False, " ".join(f"{type(exc).__name__}: {exc}".split())


def show(title: str, client: Client, run: Callable[[Client, list[tuple[int, str]]], list[Outcome]]) -> None:
    """Run one half with fresh files, and print what happened to each item."""
    print(f"== {title}")
    print(f"Dask workers before: {dask_workers(client)}")
    with tempfile.TemporaryDirectory() as runs:
        began = time.monotonic()
        outcomes = run(client, [(i, runs) for i in range(ITEMS)])
        took = time.monotonic() - began
        counts = {i: runs_of(Path(runs) / f"{i}.runs") for i in range(ITEMS)}
    ok = [i for i, (good, value) in enumerate(outcomes) if good and value == repr(i * i)]
    print(f"{len(ok)} of {ITEMS} items returned their square, in {took:.1f} s: items {spans(ok)}")
    for i, (good, text) in enumerate(outcomes):
        if i not in ok:
            print(f"item {i} returned {text}" if good else f"item {i} failed: {text}")
    again = ", ".join(f"item {i} ran {n} times" for i, n in counts.items() if n != 1)
    print(f"runs of each item: {again or 'each ran once'}")
    print(f"Dask workers after:  {dask_workers(client)}")
    print()


def dask_workers(client: Client) -> str:
    """The cluster's Dask workers, as "address (pid n)", once both are up."""
    client.wait_for_workers(2, timeout=DEADLINE)
    pids: dict[str, int] = client.run(os.getpid)
    return ", ".join(f"{address} (pid {pid})" for address, pid in sorted(pids.items()))


def runs_of(path: Path) -> int:
    """How many times an item ran: the lines of its file, which its first run creates."""
    return len(path.read_text().split()) if path.exists() else 0


def spans(items: list[int]) -> str:
    """[0, 1, 2, 4] as "0-2, 4"."""
    runs: list[list[int]] = []
    for i in items:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs) or "none"


if __name__ == "__main__":
    main()
