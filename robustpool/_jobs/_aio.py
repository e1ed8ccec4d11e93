"""Waiting for a job from asyncio: no thread parked per wait, one loop wake-up per burst.

An engine reports outcomes on its own thread. A coroutine that awaits a result registers a
*watcher* with the job; when the job has news it calls the watcher on the engine's thread,
and the watcher posts to the event loop's ``Waker``. The waker asks the loop for a turn
(``call_soon_threadsafe``) only for the first post since its last turn, so a burst of
results for any number of awaiting coroutines costs the loop one wake-up, not one per
result.

Cancellation is the caller's business: ``wait`` raises ``asyncio.CancelledError`` when the
awaiting task is cancelled, and each result type then stops its own work.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable

Watch = Callable[[Callable[[], None]], bool]  # register a watcher; True: ready already, not registered


class Waker:
    """Runs callbacks posted from any thread on one event loop, in one loop turn per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._posted: list[Callable[[], None]] = []

    def post(self, fn: Callable[[], None]) -> None:
        with self._lock:
            first = not self._posted
            self._posted.append(fn)
        if first:
            try:
                self._loop.call_soon_threadsafe(self._run)
            except RuntimeError:  # the loop is closed: nobody is left to wake
                with self._lock:
                    self._posted.clear()

    def _run(self) -> None:
        with self._lock:
            posted, self._posted = self._posted, []
        for fn in posted:
            fn()


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def waker(loop: asyncio.AbstractEventLoop) -> Waker:
    with _wakers_lock:
        w = _wakers.get(loop)
        if w is None:
            w = _wakers[loop] = Waker(loop)
        return w


async def wait(watch: Watch) -> None:
    """Return once the job ``watch`` registers with has news (at once if it has already)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def woken() -> None:
        if not fut.done():
            fut.set_result(None)

    post = waker(loop).post
    if watch(lambda: post(woken)):
        return
    await fut
