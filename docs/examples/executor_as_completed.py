"""RobustExecutor with as_completed: one task kills its worker, the other 99 finish.

With ``concurrent.futures.ProcessPoolExecutor`` the SIGKILL breaks the whole executor: every
pending future fails with ``BrokenProcessPool`` and the executor must be rebuilt. Here only
the future of the task that died fails, with a ``WorkerLostError`` naming the signal, the
pid and the task; the executor replaces the worker and goes on. Then a running future is
cancelled, which stops it: its worker is killed and replaced. Run it:

    python docs/examples/executor_as_completed.py
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import as_completed

from robustpool import RobustExecutor, WorkerLostError


def square(x: int) -> int:
    if x == 37:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return x * x


def main() -> None:
    with RobustExecutor(max_workers=2) as executor:
        futures = {executor.submit(square, x): x for x in range(100)}
        results, lost = 0, []
        for future in as_completed(futures, timeout=60):
            try:
                future.result()
                results += 1
            except WorkerLostError as exc:
                lost.append((futures[future], exc.signal.name if exc.signal else exc.exitcode))
        print(f"{results} results, lost: {lost}")
        print(f"the executor goes on: square(12) = {executor.submit(square, 12).result(timeout=30)}")

        running = executor.submit(time.sleep, 60)
        while not running.running():
            time.sleep(0.01)
        time.sleep(0.2)  # it is in a worker now
        print(f"cancel() of a running future: {running.cancel()}, cancelled: {running.cancelled()}")
        deadline = time.monotonic() + 10  # the supervisor reports the kill a moment later
        while "cancelled" not in dict(executor.stats().replaced) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(f"workers replaced, by reason: {dict(executor.stats().replaced)}")


if __name__ == "__main__":
    main()
