"""Jobs of n items gathered into one list: ``map_async`` / ``starmap_async``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any, TypeVar, final

from .._engine import Engine
from . import Cleanup, run_cleanups
from ._single import AsyncResult, Outcome

if TYPE_CHECKING:
    from .._progress import Bar

T = TypeVar("T")
log = logging.getLogger("robustpool")


class GatherJob(Outcome):
    """A list once every item is done.

    As in the standard library it waits for every item even after a failure and then
    raises the first error that arrived; with ``cleanup``, every successful value is passed
    to it before the error is raised, since the caller will never see them.
    """

    def __init__(
        self,
        length: int,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        cleanup: Cleanup | None = None,
        engine: Engine | None = None,
        bar: Bar | None = None,
    ) -> None:
        super().__init__(callback, error_callback, engine)
        self._bar = bar  # counts items as they complete (see _progress)
        self._lock = threading.Lock()
        self._values: list[Any] = [None] * length
        self._delivered: list[tuple[int, int]] = []  # (index, count) of each delivery, for stop()
        self._stopped = False  # stop() ran: values that still arrive are cleaned at once
        self._remaining = length
        self._failed: set[int] = set()
        # 1 for each item whose outcome arrived: a second outcome for an item (an engine's
        # bug) is cleaned and logged, never written into the list the caller already has.
        self._settled = bytearray(length)
        self._error: BaseException | None = None
        self._cleanup = cleanup
        if length == 0:
            self._finish()

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        n = len(values)
        with self._lock:
            # Late: stopped, or items already failed (an engine that cannot stop running
            # work failed them at terminate() and reports their values when they come).
            late = self._stopped or self._settled.find(1, index, index + n) != -1
            if not late:
                self._values[index : index + n] = values
                self._settled[index : index + n] = b"\1" * n
                self._delivered.append((index, n))
                self._remaining -= n
                done = self._remaining == 0
            twice = late and not self._stopped and not self._failed.intersection(range(index, index + n))
        if late:
            if twice:
                log.error("robustpool: items %s..%s of a map_async arrived twice; cleaning the second", index, index + n - 1)
            if self._cleanup is not None:
                run_cleanups(self._cleanup, values)
            return
        if self._bar is not None:
            self._bar.done(len(values))
        if done:
            self._finish()

    def fail(self, index: int, exc: BaseException) -> None:
        with self._lock:
            if self._stopped or self._settled[index]:
                return
            self._settled[index] = 1
            self._failed.add(index)
            if self._error is None:
                self._error = exc
            self._remaining -= 1
            done = self._remaining == 0
        if self._bar is not None:
            self._bar.failed()
        if done:
            self._finish()

    def stop(self) -> None:
        """The awaiting task was cancelled: end as cancelled, stop the running chunks, and
        clean the values that arrived (and, as they come, those a worker still owes: the
        engine kills a worker only once the items it finished have arrived)."""
        with self._lock:
            if self._remaining == 0 or self._stopped:
                return  # complete (the caller may still take it), or stopped already
            self._stopped = True
            held = [v for i, n in self._delivered for v in self._values[i : i + n]]
            self._values, self._delivered = [], []
        if self._bar is not None:
            self._bar.close()
        self._set(False, CancelledError())
        if self._engine is not None:
            self._engine.kill(self)
        if held and self._cleanup is not None:
            run_cleanups(self._cleanup, held)

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()  # before the waiters wake: the bar is complete when get() returns
        if self._error is None:
            self._set(True, self._values)
            return
        if self._cleanup is not None:
            errors = run_cleanups(self._cleanup, (v for i, v in enumerate(self._values) if i not in self._failed))
            if errors:
                self._error.add_note(f"robustpool: {len(errors)} cleanup call(s) also failed; see the log")
        self._values = []
        self._set(False, self._error)


@final
class MapResult(AsyncResult[list[T]]):
    """The result of ``map_async`` / ``starmap_async``: the list of results, in order,
    once every item is done; ``get`` raises the first error (after the cleanup of the
    values nobody will see). Made by the pool, not by users.

    An ``AsyncResult`` (``get``, ``wait``, ``ready``, ``successful``, ``await``), as
    ``multiprocessing.pool.MapResult`` is. As in the standard library it is ready only once
    every item is done, even after a failure, and ``get`` raises the first error that arrived;
    unlike it, an error fails only its own item, not its chunk. Cancelling a task that awaits
    it stops the running items and passes the values that arrived to the call's ``cleanup``.
    """


MapResult.__module__ = "robustpool"  # as imported by users (see _errors)
