"""What runs in a worker under chaos: the user's function, wrapped, and the faults it applies.

The owner decides everything (``_plan``); a worker only obeys: each item arrives as
``(plan, mode, item)`` and :class:`ChaosCall` runs the user's function on ``item`` as the
pool would have (``mode`` says how to spread it), applying ``plan`` before, during or after
the call. No randomness here, so a seed replays a run.

A fault fires on an item's first attempt only: the attempt is recorded by creating a marker
file with ``O_EXCL`` (named after the item's serial number, the fault and its phase), so a
retried item (``retries=``) runs clean, and the owner learns from the markers which faults
really fired (a cancelled item never starts; a "during" timer may lose the race against a
quick function and fire right after it instead).

The deaths themselves (:func:`die`) are shared with the project's stress suite.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .._calls import Mode, describe

#: How a worker dies, by the name the report counts it under.
KILL = "kill"  # SIGKILL, as the OOM killer sends
SEGFAULT = "segfault"  # SIGSEGV, as a crash in a C extension
EXIT = "exit"  # os._exit(): the process ends without unwinding, no exception
DEATHS = (KILL, SEGFAULT, EXIT)
DELAY = "delay"  # the result comes late
HANG = "hang"  # the call never returns (a stuck C call): only for calls with a task_timeout

BEFORE, DURING, AFTER = "before", "during", "after"
PHASES = (BEFORE, DURING, AFTER)

EXIT_CODE = 71  # os._exit's code: EX_OSERR, unlike any code a Python error exits with


class Plan(NamedTuple):
    """One item's fault. ``seconds``: the delay, or when a "during" fault fires."""

    serial: int
    kind: str
    phase: str
    seconds: float


def no_core() -> None:
    """A crash on purpose leaves no core file and no faulthandler dump behind."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    faulthandler.disable()


def die(kind: str) -> None:
    """End this process the way ``kind`` says; never returns."""
    if kind == KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == SEGFAULT:
        no_core()
        ctypes.string_at(0)  # a real invalid read: SIGSEGV from the kernel
    elif kind == EXIT:
        os._exit(EXIT_CODE)
    time.sleep(60)  # a signal is asynchronous: never go on running meanwhile
    os._exit(EXIT_CODE)  # pragma: no cover - SIGKILL cannot be ignored


def _first_attempt(markers: str, plan: Plan) -> bool:
    name = os.path.join(markers, f"{plan.serial}-{plan.kind}-{plan.phase}")
    try:
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    except OSError:
        return False  # the run is over (its directory is gone): run clean
    os.close(fd)
    return True


class Packed:
    """One item as chaos sends it: its plan, how it applies (``Mode``) and the item itself.

    Shown (in robustpool's error messages, ``f(1, 2)``) as the item alone would be."""

    __slots__ = ("item", "mode", "plan")

    def __init__(self, plan: Plan | None, mode: int, item: Any) -> None:
        self.plan = plan
        self.mode = mode
        self.item = item

    def __reduce__(self) -> tuple[Any, ...]:
        return (Packed, (self.plan, self.mode, self.item))

    def __repr__(self) -> str:
        shown = describe("", Mode(self.mode), self.item)
        return shown[1:-1]  # describe() gives "(...)" for an empty name


def _call(fn: Callable[..., Any], mode: int, item: Any) -> Any:
    if mode == Mode.MAP:
        return fn(item)
    if mode == Mode.STAR:
        return fn(*item)
    return fn(*item[0], **item[1])


class ChaosCall:
    """The user's function as chaos runs it (pickled with the function inside)."""

    __slots__ = ("fn", "markers")

    def __init__(self, fn: Callable[..., Any], markers: str) -> None:
        self.fn = fn
        self.markers = markers

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChaosCall, (self.fn, self.markers))

    def __call__(self, packed: Packed) -> Any:
        plan, mode, item = packed.plan, packed.mode, packed.item
        if plan is None or not _first_attempt(self.markers, plan):
            return _call(self.fn, mode, item)
        kind, phase = plan.kind, plan.phase
        if kind == HANG:
            while True:  # until the pool's task_timeout kills this worker
                time.sleep(3600)
        if kind == DELAY:
            value = _call(self.fn, mode, item)
            time.sleep(plan.seconds)
            return value
        if phase == BEFORE:
            # Results this worker finished and still holds (batched for company) leave
            # first: a death before an item takes nothing along but that item.
            from .._process._worker import send_pending

            send_pending()
            die(kind)
        if phase == DURING:
            timer = threading.Timer(plan.seconds, die, (kind,))
            timer.daemon = True
            timer.start()
        try:
            _call(self.fn, mode, item)
        finally:
            # After the call (or, "during", the call ended before the timer fired): the
            # worker dies now, with the result or error, before either leaves it.
            die(kind)
        raise AssertionError("unreachable")  # pragma: no cover
