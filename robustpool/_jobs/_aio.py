"""Waiting for a job from asyncio: no thread parked per wait, one loop wake-up per burst.

An engine reports outcomes on its own thread. A coroutine that awaits a result registers a
*watcher* with the job; when the job has news it calls the watcher on the engine's thread,
and the watcher hands the coroutine's future to its event loop's ``Waker``. The waker asks
the loop for a turn (``call_soon_threadsafe``) only for the first since its last turn, so a burst of
results for any number of awaiting coroutines costs the loop one wake-up, not one per
result.

Cancellation is the caller's business: ``wait`` raises ``asyncio.CancelledError`` when the
awaiting task is cancelled, and each result type then stops its own work.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable, Generator
from typing import Any

Watch = Callable[[Callable[[], None]], bool]  # register a watcher; True: ready already, not registered
CancelledError = asyncio.CancelledError


class Waker:
    """Resolves futures of one event loop from any thread, in one loop turn per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._posted: list[asyncio.Future[None]] = []

    def wake(self, fut: asyncio.Future[None], *_: object) -> None:
        """Resolve ``fut`` in the loop's next turn (any thread). Extra arguments are
        ignored, so the same partial serves as a job's watcher and a future's callback."""
        with self._lock:
            first = not self._posted
            self._posted.append(fut)
        if first:
            try:
                self._loop.call_soon_threadsafe(self._run)
            except RuntimeError:  # the loop is closed: nobody is left to wake
                with self._lock:
                    self._posted.clear()

    def _run(self) -> None:
        with self._lock:
            posted, self._posted = self._posted, []
        for fut in posted:
            if not fut.done():  # its task was cancelled meanwhile
                fut.set_result(None)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def waker(loop: asyncio.AbstractEventLoop) -> Waker:
    w = _wakers.get(loop)  # a dict read: the lock is for making one
    if w is None:
        with _wakers_lock:
            w = _wakers.get(loop)
            if w is None:
                w = _wakers[loop] = Waker(loop)
    return w


def arm(watch: Watch) -> asyncio.Future[None] | None:
    """A future of the running loop that resolves once the job ``watch`` registers with
    has news; None if it has news already."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    return None if watch(functools.partial(waker(loop).wake, fut)) else fut


def waiting(watch: Watch) -> Generator[Any, None, None]:
    """``yield from`` it in an ``__await__``: returns once the job has news. Raises
    ``asyncio.CancelledError`` when the awaiting task is cancelled."""
    fut = arm(watch)
    if fut is not None:
        yield from fut


async def wait(watch: Watch) -> None:
    """``waiting`` for coroutines."""
    fut = arm(watch)
    if fut is not None:
        await fut
