"""``python -m robustpool demo``: a temp-file pipeline under injected faults.

Each item writes its result to a temporary file and returns the path; the consumer reads
and deletes each file, and ``cleanup=`` deletes the files of results the consumer never
takes. Some items kill their worker (SIGKILL, as the OOM killer would; a segfault, as a C
extension might; ``os._exit``), one raises, one runs past ``task_timeout``, and the consumer
breaks off early. The report counts what was delivered, every error by kind, the workers
lost and replaced, and the temp files left behind (none). Then the same SIGKILL is run on
``multiprocessing.Pool`` and ``ProcessPoolExecutor``, each bounded by a timeout, and what
they did is printed: measured here, on this machine, not recalled.
"""

from __future__ import annotations

import collections
import ctypes
import faulthandler
import logging
import multiprocessing
import os
import resource
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._errors import TaskTimeoutError, WorkerLostError
from ._pool import RobustPool

TIMEOUT = 1.0  # the pool's task_timeout, seconds
HANG_WAIT = 3.0  # how long the standard library's pool gets to deliver after the death


def _segfault() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for a crash on purpose
    faulthandler.disable()  # and no dump on stderr
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def _exit() -> None:
    os._exit(3)


def _raise() -> None:
    raise ValueError("a bad record")


def _sleep() -> None:
    time.sleep(3600)  # task_timeout stops it long before


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# What item i does, by i % 10 in the first 10 positions of every 20 (see fault_of).
FAULTS: dict[int, tuple[str, Callable[[], None]]] = {
    2: ("SIGKILL", _sigkill),
    4: ("segfault", _segfault),
    6: ("os._exit(3)", _exit),
    8: ("exception", _raise),
    9: ("timeout", _sleep),
}


def fault_of(i: int) -> tuple[str, Callable[[], None]] | None:
    return FAULTS.get(i % 20)


_directory = ""  # where results go: set in each worker by the pool's initializer


def _set_directory(directory: str) -> None:
    global _directory
    _directory = directory


def work(i: int) -> str:
    """Write item ``i``'s result to a file; return its path."""
    fault = fault_of(i)
    if fault is not None:
        fault[1]()
    time.sleep(0.01)
    path = os.path.join(_directory, f"result-{i}.txt")
    with open(path, "w") as f:
        f.write(f"{i * i}\n")
    return path


def _kill_self(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return x


def run(items: int = 40, compare: bool = True) -> int:
    logging.getLogger("robustpool").addHandler(logging.NullHandler())  # the report says it all
    stop_at = items - items // 5  # the consumer breaks off here
    print(f"robustpool demo: a temp-file pipeline of {items} items on 2 workers, task_timeout={TIMEOUT:g} s.")
    faults = [f"item {i} {fault[0]}" for i in range(items) if (fault := fault_of(i)) is not None]
    print("Faults: " + ", ".join(faults))
    print(f"The consumer breaks off after item {stop_at - 1}; cleanup= deletes what it never took.\n")
    errors: collections.Counter[str] = collections.Counter()
    cleaned: list[str] = []
    delivered = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="robustpool-demo-") as directory:

        def cleanup(path: str) -> None:
            cleaned.append(path)
            os.unlink(path)

        with RobustPool(2, _set_directory, (directory,), task_timeout=TIMEOUT) as pool:
            it = pool.imap(work, range(items), cleanup=cleanup)
            with it:
                for i in range(stop_at):
                    try:
                        path = next(it)
                    except (WorkerLostError, TaskTimeoutError, ValueError) as err:
                        errors[_kind(err)] += 1
                        print(f"  item {i:2d}: {type(err).__name__}: {str(err).split('. Likely cause')[0]}")
                        continue
                    with open(path) as result:
                        value = int(result.read())
                    os.unlink(path)
                    delivered += 1
                    print(f"  item {i:2d}: {value}")
            # Leaving `with it` closed the iterator: the results computed past the break
            # were cleaned (deleted), and the tasks not started were cancelled.
            pool.close()
            pool.join()
            stats = pool.stats()
        left = os.listdir(directory)
    elapsed = time.monotonic() - start
    replaced = ", ".join(f"{n} {why}" for why, n in stats.replaced) or "none"
    print(f"\nReport ({elapsed:.1f} s):")
    print(f"  items delivered      {delivered} of the {stop_at} consumed")
    print(f"  errors by kind       {dict(errors)}")
    print(f"  workers replaced     {stats.workers_replaced} ({replaced})")
    print(f"  results cleaned      {len(cleaned)} (computed after the break, never handed over)")
    print(f"  temp files left      {len(left)}")
    ok = not left and sum(errors.values()) == sum(1 for i in range(stop_at) if fault_of(i))
    ok = ok and delivered == stop_at - sum(errors.values())
    if compare:
        print("\nThe same SIGKILL (item 3 of 10, 2 workers) in the standard library, measured now:")
        print(f"  multiprocessing.Pool.imap:   {_stdlib_pool()}")
        print(f"  ProcessPoolExecutor.submit:  {_stdlib_executor()}")
    return 0 if ok else 1


def _kind(err: BaseException) -> str:
    if isinstance(err, WorkerLostError):
        return f"WorkerLostError({signal.Signals(err.signal).name if err.signal else f'exit {err.exitcode}'})"
    return type(err).__name__


def _stdlib_pool() -> str:
    pool = multiprocessing.Pool(2)
    got: list[Any] = []
    try:
        it = pool.imap(_kill_self, range(10))
        while True:
            try:
                got.append(it.next(timeout=HANG_WAIT))
            except StopIteration:
                return f"finished with {len(got)} results (not the hang it used to be)"
            except multiprocessing.TimeoutError:
                return f"{len(got)} results, then nothing for {HANG_WAIT:g} s: it waits forever (stopped here by terminate())"
    finally:
        pool.terminate()
        pool.join()


def _stdlib_executor() -> str:
    with ProcessPoolExecutor(2) as executor:
        futures = [executor.submit(_kill_self, x) for x in range(10)]
        wait(futures, timeout=HANG_WAIT * 3)
        broken = sum(1 for f in futures if f.done() and isinstance(f.exception(), BrokenProcessPool))
        ok = sum(1 for f in futures if f.done() and f.exception() is None)
        try:
            executor.submit(_kill_self, 0).result(timeout=HANG_WAIT)
            after = "a new task runs"
        except BrokenProcessPool:
            after = "a new task raises BrokenProcessPool: the executor must be rebuilt"
    return f"{ok} results, {broken} futures failed with BrokenProcessPool for one death; {after}"
