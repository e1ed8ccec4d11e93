"""What every sigkill_<peer>.py script shares: the task, the tally and the RESULT line.

The scenario: 2 workers, 20 tasks f(0) .. f(19), one handle per task; f(7) SIGKILLs its own
worker (as the OOM killer would), the others sleep 20 ms and return i * i. Every wait is
bounded by one deadline; a task with neither a result nor an error by then counts as hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

TASKS = 20
KILLED = 7  # the task that SIGKILLs its worker
WORKERS = 2
DEADLINE = 20.0  # seconds for all 20 outcomes
PROBE_TIMEOUT = 5.0  # seconds for the one task run after them


def f(i: int) -> int:
    if i == KILLED:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.02)
    return i * i


async def af(i: int) -> int:
    """f as a coroutine, for pools that run only coroutines (aiomultiprocess)."""
    if i == KILLED:
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(0.02)
    return i * i


@dataclass
class Tally:
    results: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, BaseException] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)
    usable_after: bool = False
    probe_error: str = ""
    deadline: float = DEADLINE


def collect(
    handles: list[Any],
    get: Callable[[Any, float], Any],
    timeouts: tuple[type[BaseException], ...],
    deadline: float = DEADLINE,
) -> Tally:
    """Wait for every handle (get(handle, seconds) returns its value or raises), within `deadline` seconds.

    An exception in `timeouts` means "no outcome yet": that task is pending (hung).
    """
    tally = Tally(deadline=deadline)
    end = time.monotonic() + deadline
    for i, handle in enumerate(handles):
        try:
            tally.results[i] = get(handle, max(end - time.monotonic(), 0.01))
        except timeouts:
            tally.pending.append(i)
        except BaseException as exc:  # the task's outcome, whatever it is
            tally.errors[i] = exc
    return tally


def probe(tally: Tally, run_one: Callable[[], Any], timeouts: tuple[type[BaseException], ...]) -> None:
    """Can the same pool run one more task? run_one() runs f(3), waiting at most PROBE_TIMEOUT."""
    try:
        tally.usable_after = run_one() == 9
    except timeouts:
        tally.probe_error = f"no result within {PROBE_TIMEOUT:.0f} s"
    except BaseException as exc:
        tally.probe_error = f"raised {type(exc).__name__}"


async def acollect(awaitables: list[Awaitable[Any]]) -> Tally:
    """collect() for coroutines: all of them share DEADLINE; those not done by then are pending."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    await asyncio.wait(tasks, timeout=DEADLINE)
    tally = Tally()
    for i, task in enumerate(tasks):
        if not task.done():
            tally.pending.append(i)
            task.cancel()
        elif (exc := task.exception()) is not None:
            tally.errors[i] = exc
        else:
            tally.results[i] = task.result()
    return tally


async def aprobe(tally: Tally, awaitable: Awaitable[Any]) -> None:
    """probe() for a coroutine that runs af(3)."""
    try:
        tally.usable_after = await asyncio.wait_for(awaitable, PROBE_TIMEOUT) == 9
    except TimeoutError:
        tally.probe_error = f"no result within {PROBE_TIMEOUT:.0f} s"
    except BaseException as exc:
        tally.probe_error = f"raised {type(exc).__name__}"


def one_line(exc: BaseException) -> str:
    """The message on one line; for a message that is a traceback, its last line (the error itself)."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        text = [line for line in text.splitlines() if line.strip(' "')][-1]
        text = re.sub(r"^\s*[\w.]+\.(\w+: )", r"\1", text)  # "pkg.mod.Error: msg" -> "Error: msg"
    return " ".join(text.split())


def report(peer: str, tally: Tally) -> None:
    """Print the one RESULT line, the last line of the script's output."""
    delivered = sum(1 for i, value in tally.results.items() if value == i * i)
    killed_error = tally.errors.get(KILLED)
    if killed_error is not None:
        note = (one_line(killed_error)[:80] or repr(killed_error)[:80]).strip()
    elif KILLED in tally.pending:
        note = f"task {KILLED}: no result and no error within {tally.deadline:.0f} s"
    else:
        note = f"task {KILLED} returned {tally.results.get(KILLED)!r}"
    if len(tally.pending) > 1:
        note += f"; {len(tally.pending)} tasks pending"
    if tally.probe_error:
        note += f"; the next task: {tally.probe_error}"
    fields = {
        "peer": peer,
        "delivered": delivered,
        "failed": len(tally.errors),
        "error": type(killed_error).__name__ if killed_error is not None else "none",
        # failed counts the errors received, blamed the tasks they fell on (the killed one
        # included); with one handle per task, as here, each error falls on one task.
        "blamed": len(tally.errors),
        "hung": "yes" if tally.pending else "no",
        "usable_after": "yes" if tally.usable_after else "no",
    }
    line = " ".join(f"{key}={value}" for key, value in fields.items())
    sys.stdout.write(f"RESULT {line} note={note}\n")
    sys.stdout.flush()


def kill_descendants() -> None:
    """Hard teardown: SIGKILL every process this script started (psutil comes with robustpool)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


def watchdog(seconds: int, what: str) -> None:
    """If the script is still running after `seconds` (a teardown that hangs), kill its processes and exit.

    An alarm signal rather than a timer thread: the owner stays single-threaded, as the script
    would be without the watchdog (robustpool, for one, starts its supervisor by a fork then).
    """

    def fire(signum: int, frame: object) -> None:
        sys.stderr.write(f"watchdog: {what} still running after {seconds} s; killing the workers\n")
        sys.stderr.flush()
        kill_descendants()
        os._exit(3)

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
