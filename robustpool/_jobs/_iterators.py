"""The iterator users get from ``imap`` / ``imap_unordered``."""

from __future__ import annotations

import contextlib
from typing import Generic, TypeVar, final

from .. import _forks
from ._stream import StreamJob

T = TypeVar("T")


@final
class IMapIterator(Generic[T]):
    """The iterator returned by ``imap``/``imap_unordered``. Made by the pool, not by users.

    Input is read lazily, in the consumer's thread, keeping at most ``buffersize`` chunks
    ahead of the consumer. An item's error is raised at that item's position (``imap``) or
    when it arrives (``imap_unordered``) and iteration can continue afterwards;
    ``next(timeout)`` raises ``multiprocessing.TimeoutError``. ``async for`` works too,
    without blocking the event loop.

    Closing (``close()``, leaving ``with``, garbage collection, terminating the pool) keeps
    the cleanup promise: every computed result the consumer never received is passed to
    ``cleanup`` exactly once, in the owner; tasks not yet started are cancelled. A closed
    iterator stops iterating. ``multiprocessing.pool.IMapIterator`` has no ``close()`` and no
    ``with``; used in a process forked from the owner, this one raises ``RuntimeError``.
    """

    def __init__(self, job: StreamJob) -> None:
        self._job = job

    def __iter__(self) -> IMapIterator[T]:
        return self

    def __next__(self) -> T:
        # `self` is dropped first: an item's exception keeps this frame in its traceback,
        # and a caller that stores the exception must not keep the iterator alive by it.
        job = self._job
        del self
        return job.next()  # type: ignore[no-any-return]

    def next(self, timeout: float | None = None) -> T:
        """Return the next result, raising an item's exception at its position; ``next(it)``
        is ``it.next()``.

        :param timeout: seconds to wait at most; default None: as long as it takes.
        :returns: the next result (in input order for ``imap``, in completion order for
            ``imap_unordered``).
        :raises StopIteration: no result is left, or the iterator was closed.
        :raises multiprocessing.TimeoutError: no result within ``timeout`` seconds, as in the
            standard library; the iterator stays usable.
        :raises Exception: the item's error (the errors listed on ``RobustPool.apply``), or the
            input's own exception at its position; iteration can go on after it.
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        job = self._job
        del self
        return job.next(timeout)  # type: ignore[no-any-return]

    def __aiter__(self) -> IMapIterator[T]:
        return self

    async def __anext__(self) -> T:
        """The next result for ``async for``: waits without blocking the event loop.

        Leaving the loop (``break``, an exception, cancelling the task) keeps the cleanup
        promise as for a plain ``for``: the iterator is closed when it is dropped (or by
        ``close()``/``with``). Cancelling the task closes it at once, without waiting:
        tasks not started are cancelled, running ones finish and their results are cleaned
        on arrival.
        """
        import asyncio  # here: a loop runs, so it is loaded; `import robustpool` stays lean

        from . import _aio

        job = self._job
        del self
        while True:
            try:
                got = job.poll()
            except StopIteration:
                raise StopAsyncIteration from None
            if got is not None:
                ok, value = got
                if ok:
                    return value  # type: ignore[no-any-return]
                raise value
            try:
                await _aio.wait(job.watch)
            except asyncio.CancelledError:
                job.close_now()
                raise

    def close(self) -> None:
        """Cancel unstarted tasks and clean every computed result never handed out.

        Waits up to the pool's ``close_timeout`` seconds for tasks already running; results
        that arrive later are cleaned on arrival. The input is not read any further. Leaving
        ``with`` calls it. Calling it again is harmless.

        :raises ExceptionGroup: some ``cleanup`` calls raised; all of them were run first (and
            their errors logged).
        :raises RuntimeError: called in a process forked from the pool's owner.
        """
        self._job.close()

    def __enter__(self) -> IMapIterator[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._job.close()

    def __del__(self) -> None:
        job = getattr(self, "_job", None)
        if job is not None and not job.closed and job.gen == _forks.generation:
            with contextlib.suppress(BaseException):
                job.close_now()


IMapIterator.__module__ = "robustpool"  # as imported by users (see _errors)
