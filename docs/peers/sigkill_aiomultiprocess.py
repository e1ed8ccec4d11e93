"""aiomultiprocess: coroutines on child processes; the tasks a killed child held never finish."""

import asyncio

import aiomultiprocess
from _common import TASKS, WORKERS, acollect, af, aprobe, report, watchdog


async def run() -> None:
    pool = aiomultiprocess.Pool(processes=WORKERS)
    tally = await acollect([pool.apply(af, (i,)) for i in range(TASKS)])
    await aprobe(tally, pool.apply(af, (3,)))
    report("aiomultiprocess", tally)
    pool.terminate()
    await asyncio.wait_for(pool.join(), 10)


def main() -> None:
    watchdog(60, "sigkill_aiomultiprocess.py")
    asyncio.run(run())


if __name__ == "__main__":
    main()
