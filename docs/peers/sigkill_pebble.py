"""pebble: the killed task's future fails with ProcessExpired (exit code and pid); the pool goes on."""

import concurrent.futures

import pebble
from _common import PROBE_TIMEOUT, TASKS, WORKERS, collect, f, probe, report, watchdog


def main() -> None:
    watchdog(60, "sigkill_pebble.py")
    pool = pebble.ProcessPool(max_workers=WORKERS)
    futures = [pool.schedule(f, args=(i,)) for i in range(TASKS)]
    timeouts = (concurrent.futures.TimeoutError,)  # what a wait that ran out raises
    tally = collect(futures, lambda fut, seconds: fut.result(seconds), timeouts)
    probe(tally, lambda: pool.schedule(f, args=(3,)).result(PROBE_TIMEOUT), timeouts)
    report("pebble", tally)
    pool.stop()
    pool.join(timeout=10)


if __name__ == "__main__":
    main()
