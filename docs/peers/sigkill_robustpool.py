"""robustpool: a SIGKILLed worker fails only the task it was running, with WorkerLostError."""

import multiprocessing

from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog

from robustpool import RobustPool


def main() -> None:
    watchdog(60, "sigkill_robustpool.py")
    pool = RobustPool(WORKERS)
    handles = [pool.apply_async(f, (i,)) for i in range(TASKS)]
    timeouts = (multiprocessing.TimeoutError,)  # what a wait that ran out raises
    tally = collect(handles, lambda h, seconds: h.get(seconds), timeouts)
    probe(tally, lambda: pool.apply_async(f, (3,)).get(PROBE_TIMEOUT), timeouts)
    report("robustpool", tally)
    pool.terminate()
    pool.join()


if __name__ == "__main__":
    main()
