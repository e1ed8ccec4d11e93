"""billiard (Celery's Pool fork): apply_async fails the killed task, after its lost-worker timeout."""

import billiard
from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog
from billiard.exceptions import TimeoutError as BilliardTimeoutError


def main() -> None:
    watchdog(60, "sigkill_billiard.py")
    pool = billiard.Pool(WORKERS)
    handles = [pool.apply_async(f, (i,)) for i in range(TASKS)]
    timeouts = (BilliardTimeoutError,)  # what a wait that ran out raises
    tally = collect(handles, lambda h, seconds: h.get(seconds), timeouts)
    probe(tally, lambda: pool.apply_async(f, (3,)).get(PROBE_TIMEOUT), timeouts)
    report("billiard", tally)
    pool.terminate()
    pool.join()


if __name__ == "__main__":
    main()
