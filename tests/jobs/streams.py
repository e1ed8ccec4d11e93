"""Helpers for tests of ``imap`` streams over the FakeEngine: a counting input, a way to open
a stream, and a consumer that plays the engine's thread between reads."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any

from robustpool._calls import Mode
from robustpool._jobs._iterators import IMapIterator
from robustpool._jobs._stream import StreamJob

from .fake_engine import FakeEngine

MiB = 1 << 20


def double(x: int) -> int:
    return 2 * x


def fail_on_3(x: int) -> int:
    if x == 3:
        raise ValueError("item 3 failed")
    return 2 * x


class Source:
    """An input that records, at each item it yields, how many it yielded and how many
    results the consumer had received (``received`` is kept by the test)."""

    def __init__(self, n: int | None = None, fail_at: int | None = None, block_at: int | None = None) -> None:
        self.n, self.fail_at, self.block_at = n, fail_at, block_at
        self.pulled = 0
        self.received = 0
        self.log: list[tuple[int, int]] = []  # (pulled, received) at each item
        self.blocked = threading.Event()
        self.unblock = threading.Event()

    def __iter__(self) -> Iterator[int]:
        i = 0
        while self.n is None or i < self.n:
            if i == self.fail_at:
                raise ValueError(f"the input broke at {i}")
            if i == self.block_at:
                self.blocked.set()
                self.unblock.wait(2.0)
            self.pulled += 1
            self.log.append((self.pulled, self.received))
            yield i
            i += 1

    def max_ahead(self) -> int:
        return max(p - r for p, r in self.log)


def open_stream(
    engine: FakeEngine,
    iterable: Any,
    fn: Callable[[int], int] = double,
    chunksize: int = 1,
    buffersize: int = 4,
    ordered: bool = True,
    cleanup: Callable[[Any], object] | None = None,
    close_timeout: float = 2.0,
    task_timeout: float = 0.0,
) -> tuple[IMapIterator[Any], StreamJob]:
    ref = engine.function(fn)
    job = StreamJob(engine, ref, Mode.MAP, iterable, chunksize, buffersize, ordered, cleanup, close_timeout, task_timeout)
    return IMapIterator(job), job


def consume(it: IMapIterator[Any], engine: FakeEngine, src: Source, count: int) -> list[Any]:
    """Read ``count`` results, running every submitted chunk before each read (and again if
    the read itself submitted the chunk it needs)."""
    out: list[Any] = []
    for _ in range(count):
        engine.run_all()
        try:
            value = it.next(timeout=0)
        except multiprocessing.TimeoutError:
            engine.run_all()
            value = it.next(timeout=0)
        out.append(value)
        src.received += 1
    return out
