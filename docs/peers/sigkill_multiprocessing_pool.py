"""multiprocessing.Pool: the killed task's result never comes; the pool replaces the worker."""

import multiprocessing

from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog


def main() -> None:
    watchdog(60, "sigkill_multiprocessing_pool.py")
    pool = multiprocessing.Pool(WORKERS)
    handles = [pool.apply_async(f, (i,)) for i in range(TASKS)]
    # get() without a timeout would wait forever for task 7.
    timeouts = (multiprocessing.TimeoutError,)  # what a wait that ran out raises
    tally = collect(handles, lambda h, seconds: h.get(seconds), timeouts)
    probe(tally, lambda: pool.apply_async(f, (3,)).get(PROBE_TIMEOUT), timeouts)
    report("multiprocessing.Pool", tally)
    pool.terminate()
    pool.join()


if __name__ == "__main__":
    main()
