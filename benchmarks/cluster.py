"""The Dask cluster of a run that has Dask peers: one ``distributed.LocalCluster``, started
before the first case and closed after the last.

Its shape is fixed, so runs compare: ``workers`` worker processes of one thread each
(``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
dashboard_address=None)``), on loopback only, with a client in the harness process. The
cases build their Dask pools on that client (``PeerSpec.build``), so a case never times the
cluster's start; nor does it time the first pool ever built on it, since that one also pays
for what each Dask worker starts once and keeps (robustpool's engine on a Dask worker starts a
forkserver there at its first pool). Both are timed here, once, and given as notes.

``distributed`` is optional: without it the Dask peers are skipped (``PeerSpec.missing``)
and no cluster is started.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .deadline import deadline
from .peers import DASK, PeerSpec
from .work import noop

FIRST_POOL_TIMEOUT = 60.0  # bound on the first pool of each Dask peer, built before the cases


@dataclass(frozen=True)
class Cluster:
    """The run's Dask cluster, as the cases see it."""

    client: Any  # a distributed.Client (Any: distributed is optional)
    cores: int  # threads of its workers: the cores of cpu_1ms's cores x serial speed
    workers: tuple[str, ...]  # the Dask workers' addresses


@contextlib.contextmanager
def started_for(peers: list[PeerSpec], workers: int, notes: list[str]) -> Iterator[Cluster | None]:
    """The run's cluster if one of ``peers`` runs on Dask (else None), closed afterwards; the
    notes say how long it took to start and what each Dask peer's first pool on it took."""
    if not any(peer.on_cluster is not None for peer in peers):
        yield None
        return
    import distributed

    start = time.perf_counter()
    with (
        distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
        ) as local,
        distributed.Client(local) as client,  # type: ignore[no-untyped-call]
    ):
        client.wait_for_workers(workers)
        nthreads: dict[str, int] = client.nthreads()
        cluster = Cluster(client, sum(nthreads.values()), tuple(sorted(nthreads)))
        notes.append(
            f"Dask: one LocalCluster for the run, {len(cluster.workers)} worker processes x 1 thread on loopback"
            f" ({', '.join(cluster.workers)}), no dashboard; started and its client connected in"
            f" {(time.perf_counter() - start) * 1000:.0f} ms (not timed by any case)"
        )
        for peer in peers:
            if peer.on_cluster is not None:
                notes.append(_first_pool(peer, cluster, workers))
        yield cluster


def _first_pool(peer: PeerSpec, cluster: Cluster, workers: int) -> str:
    """Time ``peer``'s first pool on the fresh cluster, construction to the first result of a
    trivial task, and describe it (its close is not timed)."""
    with deadline(FIRST_POOL_TIMEOUT, f"{peer.label}'s first pool on the Dask cluster"):
        start = time.perf_counter()
        pool = peer.build(workers, cluster.client)
        try:
            value = pool.apply(noop, 7)
            elapsed = time.perf_counter() - start
        finally:
            pool.close()
    if value != 7:
        raise RuntimeError(f"{peer.label}'s first pool on the Dask cluster returned {value!r}, not 7")
    what = "pool" if peer.key != DASK else "call (it has no pool)"
    return (
        f"{peer.label}: its first {what} on the fresh cluster took {elapsed * 1000:.0f} ms from construction to the first"
        " result of a trivial task (before the cases; the startup case times later ones)"
    )
