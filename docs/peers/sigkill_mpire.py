"""mpire: a death fails every task still in the pool's cache with RuntimeError('Worker-N died unexpectedly')."""

import mpire
from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog


def main() -> None:
    watchdog(60, "sigkill_mpire.py")
    pool = mpire.WorkerPool(n_jobs=WORKERS)
    handles = [pool.apply_async(f, args=(i,)) for i in range(TASKS)]
    timeouts = (TimeoutError,)  # what a wait that ran out raises
    tally = collect(handles, lambda h, seconds: h.get(seconds), timeouts)
    probe(tally, lambda: pool.apply_async(f, args=(3,)).get(PROBE_TIMEOUT), timeouts)
    report("mpire", tally)
    pool.terminate()


if __name__ == "__main__":
    main()
