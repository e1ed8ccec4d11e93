"""Dask distributed: the nanny restarts a killed worker; the task fails with KilledWorker after 4 deaths."""

import distributed
from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog


def main() -> None:
    watchdog(85, "sigkill_dask.py")
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",  # loopback only
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    # pure=False: every call is a task of its own, never a cached result.
    futures = [client.submit(f, i, pure=False) for i in range(TASKS)]
    timeouts = (TimeoutError,)  # what a wait that ran out raises
    # A longer deadline than the others': each of the 4 deaths costs a worker restart (a new
    # interpreter importing distributed), several seconds each on a busy machine; slow is not hung.
    tally = collect(futures, lambda fut, seconds: fut.result(timeout=seconds), timeouts, deadline=45)
    probe(tally, lambda: client.submit(f, 3, pure=False).result(timeout=PROBE_TIMEOUT), timeouts)
    report("dask", tally)
    client.close(timeout=10)
    cluster.close(timeout=10)


if __name__ == "__main__":
    main()
