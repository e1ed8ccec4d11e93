"""``imap``'s StreamJob behind an IMapIterator, over the in-memory engine: the lazy window,
ordered and unordered delivery, errors at their position, closing and the cleanup promise,
garbage collection, and flush as what wakes a consumer.

The consumer is the test's thread (or a helper thread where it must block); the engine's
thread is played by the test through FakeEngine (see ``fake_engine``).
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from robustpool._calls import Mode

from .fake_engine import FakeEngine, in_thread, wait_for, waiters
from .streams import MiB, Source, consume, fail_on_3, open_stream


def _ignore(value: object) -> None:
    pass


# -- the lazy window --


@pytest.mark.parametrize("buffersize", [1, 2, 3, 5, 8])
def test_never_more_than_buffersize_items_are_read_ahead(buffersize: int) -> None:
    engine = FakeEngine()
    src = Source()
    it, _ = open_stream(engine, src, buffersize=buffersize)
    assert src.pulled == buffersize  # the first window is read at once
    assert consume(it, engine, src, 40) == [2 * i for i in range(40)]
    assert src.max_ahead() == buffersize
    it.close()


@pytest.mark.parametrize(("buffersize", "chunksize"), [(1, 4), (2, 3), (3, 2), (4, 4), (2, 1)])
def test_never_more_than_buffersize_chunks_beyond_the_consumers_chunk(buffersize: int, chunksize: int) -> None:
    """With chunksize c the window is counted in chunks: at most buffersize whole chunks
    beyond the chunk the consumer is in (so up to c-1 items more than buffersize*c past the
    consumer itself, when it is inside a chunk)."""
    engine = FakeEngine()
    src = Source()
    it, _ = open_stream(engine, src, chunksize=chunksize, buffersize=buffersize)
    assert src.pulled == buffersize * chunksize
    assert consume(it, engine, src, 37) == [2 * i for i in range(37)]
    for pulled, received in src.log:
        assert pulled <= chunksize * math.ceil(received / chunksize) + buffersize * chunksize, (pulled, received)
    assert buffersize * chunksize <= src.max_ahead() <= buffersize * chunksize + chunksize - 1
    assert all(len(c.items) == chunksize for c in engine.chunks)
    assert engine.batch_calls == [] or chunksize == 1
    it.close()


def test_the_engines_batches_of_a_chunksize_1_stream() -> None:
    engine = FakeEngine(batch=3)
    src = Source()
    it, _ = open_stream(engine, src, buffersize=8)
    assert consume(it, engine, src, 30) == [2 * i for i in range(30)]
    assert all(len(c.items) == 3 for c in engine.chunks)
    assert {ahead for _, ahead in engine.batch_calls} == {8}
    assert src.max_ahead() <= 8 + 3 - 1  # the window, rounded up to a whole batch
    assert all(c.stream and c.item_deadline for c in engine.chunks)  # each item is a task of its own to the user
    it.close()


@pytest.mark.parametrize(("held_per_item", "window"), [(0, 64), (MiB, 32), (8 * MiB, 4), (64 * MiB, 4)])
def test_big_items_shrink_the_window_to_about_32_mib_but_never_below_two_chunks_per_worker(
    held_per_item: int, window: int
) -> None:
    engine = FakeEngine(capacity=2, held_per_item=held_per_item)
    src = Source()
    it, _ = open_stream(engine, src, buffersize=64)
    consume(it, engine, src, 3 * window)
    assert src.max_ahead() == window
    it.close()


def test_a_refill_goes_out_in_one_submit_once_the_item_size_is_known() -> None:
    engine = FakeEngine(held_per_item=100)
    src = Source()
    it, _ = open_stream(engine, src, buffersize=8)
    assert engine.submits == [1, 7]  # the first chunk alone, to learn the items' size
    consume(it, engine, src, 5)  # the 5th read finds half the window free
    assert engine.submits == [1, 7, 4]
    it.close()


def test_a_refill_goes_out_in_one_submit_for_an_engine_that_holds_no_bytes() -> None:
    engine = FakeEngine(held_per_item=0)
    src = Source()
    it, _ = open_stream(engine, src, buffersize=8)
    try:
        consume(it, engine, src, 5)
        assert len(engine.submits) <= 3, engine.submits
    finally:
        it.close()


@pytest.mark.parametrize(
    ("chunksize", "cleanup", "stream", "item_deadline"),
    [(1, False, True, True), (1, True, True, True), (3, False, False, False), (3, True, True, False)],
)
def test_chunk_flags(chunksize: int, cleanup: bool, stream: bool, item_deadline: bool) -> None:
    engine = FakeEngine()
    it, job = open_stream(
        engine, range(6), chunksize=chunksize, buffersize=6, cleanup=_ignore if cleanup else None, task_timeout=2.5
    )
    assert engine.chunks
    for c in engine.chunks:
        assert (c.stream, c.item_deadline, c.indexed, c.timeout, c.mode) == (stream, item_deadline, True, 2.5, Mode.MAP)
        assert c.job is job
    assert [x for c in engine.chunks for x in c.items] == list(range(6))
    assert [c.start for c in engine.chunks] == list(range(0, 6, chunksize))
    it.close()


def test_an_empty_input() -> None:
    engine = FakeEngine()
    it, _ = open_stream(engine, [])
    assert engine.holds[0].released
    with pytest.raises(StopIteration):
        next(it)
    assert engine.chunks == []


# -- delivery --


def test_ordered_results_come_in_input_order_whatever_the_order_of_arrival() -> None:
    engine = FakeEngine()
    it, _ = open_stream(engine, range(8), chunksize=2, buffersize=4)
    chunks = list(engine.pending)
    assert len(chunks) == 4
    for k in (3, 1, 0, 2):
        engine.run(chunks[k])
    assert list(it) == [2 * i for i in range(8)]
    with pytest.raises(StopIteration):
        next(it)  # and again


def test_unordered_results_come_in_order_of_arrival() -> None:
    engine = FakeEngine()
    it, _ = open_stream(engine, range(8), chunksize=2, buffersize=4, ordered=False)
    chunks = list(engine.pending)
    for k in (3, 1, 0, 2):
        engine.run(chunks[k])
    assert list(it) == [12, 14, 4, 6, 0, 2, 8, 10]


def test_an_items_error_is_raised_at_its_position_and_iteration_goes_on() -> None:
    engine = FakeEngine()
    it, _ = open_stream(engine, range(6), fn=fail_on_3, chunksize=2, buffersize=4)
    engine.run(engine.pending[2])
    engine.run(engine.pending[1])  # the failing item's chunk arrives after a later one
    engine.run(engine.pending[0])
    assert [next(it), next(it), next(it)] == [0, 2, 4]
    with pytest.raises(ValueError, match="item 3 failed"):
        next(it)
    assert list(it) == [8, 10]


def test_unordered_an_items_error_is_raised_when_it_arrives() -> None:
    engine = FakeEngine()
    it, _ = open_stream(engine, range(6), fn=fail_on_3, chunksize=2, ordered=False)
    engine.run(engine.pending[1])
    assert next(it) == 4
    with pytest.raises(ValueError, match="item 3 failed"):
        next(it)
    engine.run_all()
    assert sorted(it) == [0, 2, 8, 10]


def test_an_input_error_is_raised_at_its_position() -> None:
    engine = FakeEngine()
    src = Source(fail_at=5)
    it, _ = open_stream(engine, src, chunksize=2, buffersize=8)
    assert [c.items for c in engine.chunks] == [[0, 1], [2, 3], [4]]
    assert engine.holds[0].released  # the input ended
    engine.run_all()
    assert [next(it) for _ in range(5)] == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="the input broke at 5") as info:
        next(it)
    assert any("input iterable" in note for note in info.value.__notes__)
    with pytest.raises(StopIteration):
        next(it)
    it.close()


def test_unordered_an_input_error_is_raised_as_soon_as_it_is_read() -> None:
    engine = FakeEngine()
    it, _ = open_stream(engine, Source(fail_at=2), ordered=False, buffersize=8)
    with pytest.raises(ValueError, match="the input broke at 2"):
        next(it)
    engine.run_all()
    assert sorted(it) == [0, 2]


def test_next_with_a_timeout_raises_multiprocessings_timeout_error_and_iteration_goes_on() -> None:
    engine = FakeEngine()
    it, _ = open_stream(engine, range(3))
    began = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    assert time.monotonic() - began < 1.0
    engine.run_all()
    assert it.next(timeout=0) == 0
    assert list(it) == [2, 4]


def test_flush_is_what_wakes_a_waiting_consumer() -> None:
    engine = FakeEngine()
    it, job = open_stream(engine, range(3))
    waiting = in_thread(lambda: it.next(timeout=5.0))
    assert wait_for(lambda: waiters(vars(job)["_cond"]) == 1)
    chunk = engine.pending[0]
    assert engine.start(chunk)
    job.deliver(0, [100])  # the burst has not ended
    with pytest.raises(TimeoutError):
        waiting.result(timeout=0.1)
    job.flush()
    assert waiting.result(timeout=2.0) == 100


def test_a_flush_after_only_failures_and_drops_wakes_the_consumer_too() -> None:
    engine = FakeEngine()
    it, job = open_stream(engine, range(2), ordered=False)
    waiting = in_thread(lambda: it.next(timeout=5.0))
    assert wait_for(lambda: waiters(vars(job)["_cond"]) == 1)
    job.fail(0, KeyError("zero"))
    with pytest.raises(TimeoutError):
        waiting.result(timeout=0.05)
    job.flush()
    with pytest.raises(KeyError, match="zero"):
        waiting.result(timeout=2.0)


# -- closing --


def _cleaner(fail_on: object = None) -> tuple[list[Any], list[int], Callable[[Any], None]]:
    cleaned: list[Any] = []
    threads: list[int] = []

    def cleanup(value: Any) -> None:
        cleaned.append(value)
        threads.append(threading.get_ident())
        if value == fail_on:
            raise OSError(f"cannot clean {value!r}")

    return cleaned, threads, cleanup


def test_close_cleans_every_buffered_success_once_cancels_and_releases_the_hold() -> None:
    engine = FakeEngine()
    cleaned, _, cleanup = _cleaner()
    it, job = open_stream(engine, Source(), fn=fail_on_3, buffersize=6, cleanup=cleanup, close_timeout=5.0)
    chunks = list(engine.pending)
    for k in (0, 1, 2, 3, 5):  # item 3 fails; item 4 has not started
        engine.run(chunks[k])
    assert next(it) == 0
    began = time.monotonic()
    it.close()
    assert time.monotonic() - began < 1.0  # nothing ran: item 4's chunk was dropped at once
    assert sorted(cleaned) == [2, 4, 10]
    assert engine.cancels == [job] and engine.pending == []
    assert engine.holds[0].calls == 1
    assert job.claim() is False
    with pytest.raises(StopIteration):
        next(it)
    it.close()
    with it:
        pass
    assert sorted(cleaned) == [2, 4, 10] and engine.cancels == [job] and engine.holds[0].calls == 1


def test_a_chunk_submitted_before_close_and_started_after_is_dropped() -> None:
    engine = FakeEngine()
    cleaned, _, cleanup = _cleaner()
    it, _ = open_stream(engine, range(4), cleanup=cleanup, close_timeout=0.05)
    chunk = engine.pending[0]
    engine.pending.remove(chunk)  # the engine took it off its queue before the cancel came
    it.close()
    engine.pending.append(chunk)
    assert engine.start(chunk) is False
    assert cleaned == []


def test_leaving_with_closes() -> None:
    engine = FakeEngine()
    cleaned, _, cleanup = _cleaner()
    it, job = open_stream(engine, range(4), cleanup=cleanup)
    engine.run_all()
    with it as same:
        assert same is it
        assert next(it) == 0
    assert job.closed and sorted(cleaned) == [2, 4, 6]


def test_close_runs_every_cleanup_and_raises_their_errors_together() -> None:
    engine = FakeEngine()
    cleaned, _, cleanup = _cleaner(fail_on=2)
    it, _ = open_stream(engine, range(4), cleanup=cleanup)
    engine.run_all()
    with pytest.raises(ExceptionGroup) as info:
        it.close()
    assert sorted(cleaned) == [0, 2, 4, 6]
    assert [str(e) for e in info.value.exceptions] == ["cannot clean 2"]


def test_close_waits_for_running_chunks_and_cleans_their_late_results_itself() -> None:
    engine = FakeEngine()
    cleaned, threads, cleanup = _cleaner(fail_on=4)
    it, job = open_stream(engine, range(4), cleanup=cleanup, close_timeout=5.0)
    engine.run(engine.pending[0])
    engine.start(engine.pending[0])
    engine.start(engine.pending[0])  # items 1 and 2 are running; item 3 has not started

    def engine_side() -> None:
        assert wait_for(lambda: job.closed)
        engine.run(engine.running[0])
        time.sleep(0.02)  # the closer waits on
        engine.run(engine.running[0])  # a value whose cleanup fails: close raises it

    late = in_thread(engine_side)
    began = time.monotonic()
    with pytest.raises(ExceptionGroup) as info:
        it.close()
    assert time.monotonic() - began < 2.0
    late.result(timeout=2.0)
    assert [str(e) for e in info.value.exceptions] == ["cannot clean 4"]
    assert sorted(cleaned) == [0, 2, 4]  # item 3 never ran: dropped
    assert set(threads) == {threading.get_ident()}  # all of them on the closer's thread


def test_results_that_arrive_after_close_returned_are_cleaned_on_arrival(caplog: pytest.LogCaptureFixture) -> None:
    engine = FakeEngine()
    cleaned, threads, cleanup = _cleaner(fail_on=2)
    it, _ = open_stream(engine, range(3), cleanup=cleanup, close_timeout=0.05)
    engine.start(engine.pending[0])
    engine.start(engine.pending[0])
    began = time.monotonic()
    it.close()  # gives up after close_timeout
    assert 0.04 <= time.monotonic() - began < 1.0
    assert cleaned == []
    in_thread(lambda: engine.run(engine.running[0])).result(timeout=2.0)
    assert cleaned == [0] and threads[0] != threading.get_ident()  # on the engine's thread
    engine.run(engine.running[0])  # a failing cleanup there is logged, not raised
    assert cleaned == [0, 2]
    assert any("cleanup(2)" in r.getMessage() for r in caplog.records)


def test_close_from_another_thread_wakes_a_consumer_blocked_in_next() -> None:
    engine = FakeEngine()
    cleaned, _, cleanup = _cleaner()
    it, job = open_stream(engine, Source(), cleanup=cleanup)
    engine.run(engine.pending[0])
    assert next(it) == 0
    waiting = in_thread(lambda: next(it))
    assert wait_for(lambda: waiters(vars(job)["_cond"]) == 1)
    in_thread(it.close).result(timeout=2.0)
    with pytest.raises(StopIteration):
        waiting.result(timeout=2.0)
    assert engine.cancels == [job] and engine.pending == [] and cleaned == []


def test_close_while_the_consumer_reads_the_input_leaves_the_input_to_it() -> None:
    engine = FakeEngine()
    src = Source(block_at=5)
    it, job = open_stream(engine, src, buffersize=4)
    engine.run_all()
    assert [next(it) for _ in range(2)] == [0, 2]
    reading = in_thread(lambda: [next(it), next(it), next(it)])  # the refill blocks in the input
    assert src.blocked.wait(2.0)
    in_thread(it.close).result(timeout=2.0)  # does not wait for the reader
    assert job.closed
    src.unblock.set()
    with pytest.raises(StopIteration):
        reading.result(timeout=2.0)
    assert src.pulled == 6  # the item it was reading, and no more
    assert vars(job)["_input"] is None  # the reader dropped it on its way out
    while engine.pending:  # a chunk of what it read meanwhile is refused at its claim
        assert engine.start() is False


def test_a_dropped_iterator_is_collected_and_closes_its_job() -> None:
    engine = FakeEngine()
    cleaned, _, cleanup = _cleaner()
    src = Source()
    it, job = open_stream(engine, src, buffersize=4, cleanup=cleanup, close_timeout=60.0)
    engine.run(engine.pending[0])
    engine.run(engine.pending[0])
    engine.start(engine.pending[0])  # item 2 is running
    ref = weakref.ref(it)
    del it
    gc.collect()
    assert ref() is None
    assert job.closed  # without waiting for the running item
    assert sorted(cleaned) == [0, 2]
    assert engine.cancels == [job] and engine.pending == [] and engine.holds[0].released
    engine.run(engine.running[0])  # its result is cleaned on arrival
    assert sorted(cleaned) == [0, 2, 4]
    assert src.pulled == 4


def test_a_closing_job_counts_late_failures_and_drops_as_accounted() -> None:
    """close() waits until every item fed is accounted: a failure and a drop count too."""
    engine = FakeEngine()
    cleaned, _, cleanup = _cleaner()
    it, job = open_stream(engine, range(3), cleanup=cleanup, close_timeout=5.0)
    for _ in range(3):
        engine.start(engine.pending[0])

    def engine_side() -> None:
        assert wait_for(lambda: job.closed)
        with engine.burst() as burst:
            burst.fail(job, 0, ValueError("late"))
            burst.drop(job, 1, 1)
            burst.deliver(job, 2, [4])

    late = in_thread(engine_side)
    began = time.monotonic()
    it.close()
    assert time.monotonic() - began < 2.0
    late.result(timeout=2.0)
    assert cleaned == [4]


def test_close_does_not_wait_for_chunks_a_blocked_reader_has_not_submitted() -> None:
    engine = FakeEngine(held_per_item=100)  # as the process engine: it reports the bytes it holds
    src = Source(block_at=5)
    it, job = open_stream(engine, src, buffersize=4, close_timeout=5.0)
    engine.run_all()
    assert [next(it) for _ in range(2)] == [0, 2]
    reading = in_thread(lambda: next(it))  # the refill builds item 4's chunk, then blocks reading item 5
    assert src.blocked.wait(2.0)
    closing = in_thread(it.close)
    try:
        closing.result(timeout=0.2)  # nothing runs and nothing is pending: close has nothing to wait for
    finally:
        src.unblock.set()
        with pytest.raises(StopIteration):
            reading.result(timeout=2.0)
        while engine.pending:  # the reader's chunks reach the engine now, and are refused
            assert engine.start() is False
        closing.result(timeout=2.0)
    assert job.closed
