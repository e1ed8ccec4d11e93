"""loky: a death breaks the executor (TerminatedWorkerError naming the exit codes, not the task)."""

import concurrent.futures

import loky
from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog


def main() -> None:
    watchdog(60, "sigkill_loky.py")
    executor = loky.get_reusable_executor(max_workers=WORKERS)
    futures = [executor.submit(f, i) for i in range(TASKS)]
    timeouts = (concurrent.futures.TimeoutError,)  # what a wait that ran out raises
    tally = collect(futures, lambda fut, seconds: fut.result(seconds), timeouts)
    # The same executor object; get_reusable_executor() would hand out a fresh one.
    probe(tally, lambda: executor.submit(f, 3).result(PROBE_TIMEOUT), timeouts)
    report("loky", tally)
    executor.shutdown(wait=True, kill_workers=True)


if __name__ == "__main__":
    main()
