"""concurrent.futures.ProcessPoolExecutor: one death breaks the executor and fails every pending future."""

import concurrent.futures

from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog


def main() -> None:
    watchdog(60, "sigkill_process_pool_executor.py")
    executor = concurrent.futures.ProcessPoolExecutor(WORKERS)
    futures = [executor.submit(f, i) for i in range(TASKS)]
    timeouts = (concurrent.futures.TimeoutError,)  # what a wait that ran out raises
    tally = collect(futures, lambda fut, seconds: fut.result(seconds), timeouts)
    probe(tally, lambda: executor.submit(f, 3).result(PROBE_TIMEOUT), timeouts)
    report("ProcessPoolExecutor", tally)
    executor.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    main()
