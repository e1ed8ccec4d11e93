"""Real Dask clusters for the tests: ``distributed.LocalCluster`` with worker processes, on
loopback, and what the leak check must not count as a leak.

A cluster's own processes (the nannies, the Dask workers, and each Dask worker's robustpool
forkserver, which lives as long as that worker by design) are *infrastructure*: they
outlive the test that started them. ``tests/conftest.py`` leaves them out of its leak check
(:func:`infrastructure`); everything a pool starts under a Dask worker (its supervisor and
worker processes) is still counted, so a pool that leaves one behind fails its test.

Two ways to get one: :func:`shared_client` (one cluster for the whole session, started on
first use: the conformance cells of ``tests/api``), and :func:`started` (a cluster of a
test module's own, for tests that kill Dask workers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil

WORKERS = 2
_FORKSERVER = "robustpool._process._forkserver import main"

_lock = threading.Lock()
_infrastructure: set[int] = set()  # every process a test cluster started, when it started
_nannies: set[int] = set()  # of which the nannies: each child of one is a Dask worker
_shared: tuple[Any, Any] | None = None


def _tree() -> list[psutil.Process]:
    try:
        return psutil.Process(os.getpid()).children(recursive=True)
    except psutil.Error:
        return []


def _is_forkserver(p: psutil.Process) -> bool:
    try:
        return _FORKSERVER in " ".join(p.cmdline())
    except psutil.Error:
        return False


def infrastructure() -> set[int]:
    """Pids of the test clusters' own processes: those they started with, the Dask workers
    their nannies restarted since, and the forkservers under any of them."""
    with _lock:
        known = set(_infrastructure)
        nannies = set(_nannies)
    if not known:
        return known
    tree = _tree()
    for _ in range(2):  # a restarted worker first, then its forkserver
        for p in tree:
            with contextlib.suppress(psutil.Error):
                parent = p.ppid()
                if parent in nannies or (parent in known and _is_forkserver(p)):
                    known.add(p.pid)
    return known


def worker_addresses(client: Any) -> list[str]:
    """The cluster's Dask workers right now, sorted."""
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def worker_pids(client: Any) -> dict[str, int]:
    """Each Dask worker's process id, by address."""
    pids: dict[str, int] = client.run(os.getpid)
    return pids


def wait_for_workers(client: Any, n: int = WORKERS, timeout: float = 60.0) -> list[str]:
    client.wait_for_workers(n, timeout=timeout)
    deadline = time.monotonic() + timeout
    while len(addresses := worker_addresses(client)) < n:
        assert time.monotonic() < deadline, f"only {addresses} of {n} Dask workers came back"
        time.sleep(0.05)
    return addresses


def _start() -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    from robustpool import RobustPool
    from robustpool.dask import DaskEngine

    before = {p.pid for p in _tree()}
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # its HTTP server (metrics) starts anyway: never a fixed port
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)  # type: ignore[no-untyped-call]
    wait_for_workers(client)
    # One pool, started and stopped: each Dask worker starts its forkserver now, so no
    # test's leak check sees it appear.
    with RobustPool(engine=DaskEngine(client)) as pool:
        assert pool.map(abs, [-1, -2, -3, -4]) == [1, 2, 3, 4]
    nannies = set(client.run(os.getpid, nanny=True).values())
    with _lock:
        _infrastructure.update(p.pid for p in _tree() if p.pid not in before)
        _nannies.update(nannies)
    return cluster, client


def _stop(cluster: Any, client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=10)
    with contextlib.suppress(Exception):
        cluster.close(timeout=10)


@contextlib.contextmanager
def started() -> Iterator[Any]:
    """A cluster of its own (for a module-scoped fixture); yields its client."""
    cluster, client = _start()
    try:
        yield client
    finally:
        _stop(cluster, client)


def shared_client() -> Any:
    """The session's cluster, started on first use; stopped by :func:`stop_shared`."""
    global _shared
    with _lock:
        shared = _shared
    if shared is None:
        shared = _start()
        with _lock:
            _shared = shared
    return shared[1]


def stop_shared() -> None:
    global _shared
    with _lock:
        shared, _shared = _shared, None
    if shared is not None:
        _stop(*shared)
