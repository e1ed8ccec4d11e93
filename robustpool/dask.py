"""robustpool on a Dask cluster: the same pools and executors, with the same guarantees.

Give a facade a :class:`DaskEngine` and its pool runs on the workers of a Dask
``distributed`` cluster instead of this machine's processes::

    from distributed import Client
    from robustpool import RobustPool
    from robustpool.dask import DaskEngine

    with Client("tcp://scheduler:8786") as client:
        with RobustPool(engine=DaskEngine(client), task_timeout=60, retries=1) as pool:
            results = pool.map(work, items)

Each Dask worker runs robustpool's own supervised process engine for the pool (a Dask
worker plugin), so a task that kills its process is caught there and fails alone with
``WorkerLostError`` (signal, pid, exit code, and the Dask worker's address), while the Dask
worker and the tasks queued on it carry on; ``task_timeout``, ``memory_limit`` (over the
task's process tree), ``maxtasksperchild``, ``retries`` (deaths included) and stopping a
running task work as on one machine. Needs the extra: ``pip install 'robustpool[dask]'``.
Importing ``robustpool`` never imports Dask; importing this module does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

try:
    import distributed
except ImportError as exc:  # pragma: no cover - the extra is installed where this is tested
    raise ImportError("robustpool.dask needs Dask distributed: pip install 'robustpool[dask]'") from exc

from ._config import PoolConfig
from ._dask._owner import DaskRunner
from ._engine import Capability, Engine

__all__ = ["DaskEngine"]


class DaskEngine:
    """Where a pool runs: the workers of a Dask cluster, reached through ``client``.

    Pass it as ``engine=`` to ``RobustPool`` or ``RobustExecutor``; every pool built with it
    gets its own process engine on each Dask worker (as many processes as that worker has
    threads), started when the pool is built and stopped when it stops. One engine can
    serve several pools. The pool's ``processes`` (``max_workers``) defaults to the
    cluster's threads; fewer caps how many of the pool's chunks run at once.

    :param client: a ``distributed.Client``, connected and synchronous (not
        ``asynchronous=True``); the pools use it from their own threads.
    :param workers: Dask worker addresses (or names) the pool's tasks may run on, as
        ``Client.submit``'s ``workers=``; default None: any.
    :param resources: Dask resources each of the pool's tasks (chunks) needs, as
        ``Client.submit``'s ``resources=``, such as ``{"GPU": 1}``; default None.
    :param owner_timeout: seconds a pool's processes on the Dask workers outlive an owner
        that stopped answering (killed with ``kill -9``, its machine gone): the pool renews a
        lease in the scheduler while it runs, and when the lease has not changed for this
        long the Dask workers stop the pool's processes, for good; default 60. Must be > 0;
        a pool whose owner is alive is never stopped by it, however long its tasks run.
    :raises TypeError: ``client`` is not a ``distributed.Client``, or ``workers``,
        ``resources`` or ``owner_timeout`` has the wrong type.
    :raises ValueError: the client is asynchronous or not connected, or ``owner_timeout`` is not
        a positive finite number of seconds.
    """

    def __init__(
        self,
        client: distributed.Client,
        *,
        workers: str | Sequence[str] | None = None,
        resources: Mapping[str, float] | None = None,
        owner_timeout: float = 60.0,
    ) -> None:
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, not {type(client).__name__}")
        if client.asynchronous:
            raise ValueError("client must be synchronous: robustpool's pools call it from their own threads")
        if client.status != "running":
            raise ValueError(f"client must be connected (its status is {client.status!r})")
        if isinstance(workers, str):
            workers = [workers]
        if workers is not None and not (isinstance(workers, Sequence) and all(isinstance(w, str) for w in workers)):
            raise TypeError("workers must be a Dask worker address, a sequence of them, or None")
        if resources is not None and not isinstance(resources, Mapping):
            raise TypeError(f"resources must be a mapping such as {{'GPU': 1}}, not {type(resources).__name__}")
        if isinstance(owner_timeout, bool) or not isinstance(owner_timeout, (int, float)):
            raise TypeError(f"owner_timeout must be a number of seconds, not {type(owner_timeout).__name__}")
        if not 0 < owner_timeout < math.inf:
            raise ValueError(f"owner_timeout must be > 0 seconds and finite, not {owner_timeout!r}")
        self._owner_timeout = float(owner_timeout)
        self._client = client
        self._workers = None if workers is None else list(workers)
        self._resources = None if resources is None else dict(resources)

    @property
    def client(self) -> distributed.Client:
        """The client the pools use."""
        return self._client

    @property
    def capabilities(self) -> Capability:
        return DaskRunner.capabilities

    @property
    def label(self) -> str:
        return "the Dask engine"

    def _threads(self) -> int:
        nthreads: dict[str, int] = self._client.nthreads()  # type: ignore[no-untyped-call]
        if self._workers is not None:
            wanted = set(self._workers)
            info = self._client.scheduler_info(n_workers=-1).get("workers", {})
            nthreads = {a: n for a, n in nthreads.items() if a in wanted or info.get(a, {}).get("name") in wanted}
        return sum(nthreads.values())

    def default_workers(self) -> int:
        threads = self._threads()
        if threads < 1:
            raise ValueError("the Dask cluster has no workers (for this engine's workers=): start some, or give processes=")
        return threads

    def default_buffersize(self, workers: int) -> int:
        # A Dask task costs milliseconds, so an imap keeps more ahead than on one machine:
        # enough for each Dask task to carry a batch of tiny items.
        return max(2048, 512 * workers)

    def start(self, config: PoolConfig) -> Engine:
        options: dict[str, Any] = {}
        if self._workers is not None:
            options["workers"] = self._workers
        if self._resources is not None:
            options["resources"] = self._resources
        return DaskRunner(self._client, config, max(1, self._threads()), options, self._owner_timeout)

    def __repr__(self) -> str:
        return f"DaskEngine({self._client!r})"
