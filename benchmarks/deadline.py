"""A bound on in-process waits: ``with deadline(60, "what"):`` raises DeadlineExceeded after 60 s.

Pools block in their own code (``Pool.join`` takes no timeout, iterators wait forever), so
the harness bounds each measurement with SIGALRM, whose handler raises in the main thread
and interrupts any blocking wait there. A timer already armed by someone else (pytest-timeout
uses SIGALRM too) is saved, honoured if it expires first, and re-armed afterwards. Outside
the main thread, or without ``setitimer``, the block runs unbounded.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType


class DeadlineExceeded(Exception):
    """A bounded block ran out of time."""


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise DeadlineExceeded in the main thread if the block runs longer than ``seconds``."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    start = time.monotonic()
    previous_handler = signal.getsignal(signal.SIGALRM)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, 0)
    previous_due = start + previous_delay if previous_delay > 0 else None
    due = start + seconds

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal previous_due
        now = time.monotonic()
        if previous_due is not None and now >= previous_due - 0.001:
            previous_due = None  # the outer timer expired first: let it act, then keep ours
            if callable(previous_handler):
                previous_handler(signum, frame)
            if now < due:
                signal.setitimer(signal.ITIMER_REAL, max(0.001, due - time.monotonic()))
                return
        raise DeadlineExceeded(f"{what} did not finish within {seconds:g} s")

    signal.signal(signal.SIGALRM, on_alarm)
    first = due if previous_due is None else min(due, previous_due)
    signal.setitimer(signal.ITIMER_REAL, max(0.001, first - time.monotonic()))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler if previous_handler is not None else signal.SIG_DFL)
        if previous_due is not None:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, previous_due - time.monotonic()), previous_interval)
