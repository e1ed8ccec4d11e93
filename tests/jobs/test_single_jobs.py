"""Jobs of one item without a process: ``apply_async``'s SingleJob behind an AsyncResult, and
``submit``'s FutureJob behind a ``concurrent.futures.Future``.

The test plays the engine: it calls the job side (claim/deliver/fail/drop/flush), from
another thread where the ordering between the two sides matters.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

from robustpool._calls import Mode
from robustpool._engine import Chunk
from robustpool._jobs._single import AsyncResult, FutureJob, SingleJob

from .fake_engine import FakeEngine, in_thread


def _result() -> tuple[SingleJob, AsyncResult[Any], list[object], list[BaseException]]:
    values: list[object] = []
    errors: list[BaseException] = []
    job = SingleJob(values.append, errors.append)
    return job, AsyncResult(job), values, errors


# -- SingleJob / AsyncResult --


def test_a_delivered_value_is_got_and_the_callback_runs_once() -> None:
    job, result, values, errors = _result()
    assert not result.ready()
    job.deliver(0, [42])
    job.flush()
    job.deliver(0, [43])  # a second outcome is ignored
    job.fail(0, ValueError("late"))
    assert result.ready() and result.successful()
    assert result.get() == 42 and result.get(timeout=0) == 42
    assert values == [42] and errors == []


def test_a_failure_is_raised_by_get_and_the_error_callback_runs_once() -> None:
    job, result, values, errors = _result()
    boom = KeyError("boom")
    job.fail(0, boom)
    job.fail(0, ValueError("second"))
    job.deliver(0, [1])
    assert result.ready() and not result.successful()
    with pytest.raises(KeyError) as info:
        result.get()
    assert info.value is boom
    assert values == [] and errors == [boom]


def test_get_times_out_with_multiprocessings_timeout_error() -> None:
    _, result, _, _ = _result()
    began = time.monotonic()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - began < 1.0
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0)


def test_wait_returns_after_its_timeout_or_once_ready() -> None:
    job, result, _, _ = _result()
    began = time.monotonic()
    result.wait(timeout=0.02)
    assert time.monotonic() - began >= 0.015
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    job.deliver(0, ["x"])
    result.wait()
    assert result.ready()


def test_a_waiting_get_wakes_when_the_engines_thread_delivers() -> None:
    job, result, values, _ = _result()
    got = in_thread(lambda: result.get(timeout=5.0))
    time.sleep(0.01)
    assert not got.done()

    def engine_side() -> None:
        job.deliver(0, ["v"])
        job.flush()

    in_thread(engine_side).result(timeout=2.0)
    assert got.result(timeout=2.0) == "v"
    assert values == ["v"]


def test_the_callback_has_run_when_get_returns() -> None:
    """As in multiprocessing: the callback runs before the result is ready."""
    ran = threading.Event()
    release = threading.Event()

    def callback(value: object) -> None:
        release.wait(2.0)
        ran.set()

    job = SingleJob(callback, None)
    result: AsyncResult[Any] = AsyncResult(job)
    engine = in_thread(lambda: job.deliver(0, [1]))
    time.sleep(0.02)
    assert not result.ready()  # the callback is still running
    release.set()
    assert result.get(timeout=2.0) == 1
    assert ran.is_set()
    engine.result(timeout=2.0)


@pytest.mark.parametrize("outcome", ["value", "error"])
def test_a_raising_callback_is_logged_not_raised(outcome: str, caplog: pytest.LogCaptureFixture) -> None:
    def bad(arg: object) -> None:
        raise RuntimeError("callback broke")

    job = SingleJob(bad, bad)
    result: AsyncResult[Any] = AsyncResult(job)
    with caplog.at_level(logging.ERROR, logger="robustpool"):
        if outcome == "value":
            job.deliver(0, [7])
        else:
            job.fail(0, OSError("item"))
    assert result.ready()
    if outcome == "value":
        assert result.get() == 7
    else:
        with pytest.raises(OSError, match="item"):
            result.get()
    what = "callback" if outcome == "value" else "error_callback"
    records = [r for r in caplog.records if r.name == "robustpool"]
    assert len(records) == 1 and f"the {what} raised" in records[0].getMessage()
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], RuntimeError)


def test_no_callbacks_at_all() -> None:
    job = SingleJob(None, None)
    result: AsyncResult[Any] = AsyncResult(job)
    job.fail(0, ValueError("x"))
    with pytest.raises(ValueError, match="x"):
        result.get()


def test_the_result_hides_the_job_side() -> None:
    job, result, _, _ = _result()
    for name in ("deliver", "fail", "drop", "claim", "flush"):
        assert hasattr(job, name)
        assert not hasattr(result, name), name
    assert type(result).__module__ == "robustpool"


def test_a_single_job_is_never_cancelled() -> None:
    job, result, _, _ = _result()
    assert job.cancellable is False
    assert job.claim() and job.claim()
    job.drop(0, 1)  # a no-op
    job.flush()
    assert not result.ready()


# -- FutureJob --


def test_claim_moves_the_future_to_running_then_deliver_sets_it() -> None:
    future: Future[int] = Future()
    job = FutureJob(future)
    assert job.cancellable is True
    assert not future.running()
    assert job.claim() is True
    assert future.running() and not future.cancel()
    assert job.claim() is True  # a chunk run again after a worker died: still wanted
    job.deliver(0, [5])
    job.flush()
    assert future.result(timeout=0) == 5
    job.deliver(0, [6])  # ignored, not raised
    job.fail(0, ValueError("late"))
    assert future.result(timeout=0) == 5


def test_fail_sets_the_exception_even_before_a_claim() -> None:
    """An item that cannot even be handed over fails without being claimed."""
    future: Future[int] = Future()
    job = FutureJob(future)
    err = ValueError("unpicklable")
    job.fail(0, err)
    assert future.done() and future.exception(timeout=0) is err
    assert job.claim() is True  # no state change left to make


def test_a_cancelled_future_refuses_its_claim_and_its_chunk_is_dropped() -> None:
    engine = FakeEngine()
    future: Future[int] = Future()
    job = FutureJob(future)
    ref = engine.function(abs)
    engine.submit([Chunk(job, ref, Mode.APPLY, 0, [((-3,), {})], indexed=False)])
    assert future.cancel()
    assert engine.start() is False
    assert engine.pending == [] and engine.running == []
    assert future.cancelled()
    with pytest.raises(CancelledError):
        future.result(timeout=0)
    # Outcomes that come anyway are swallowed.
    job.deliver(0, [3])
    job.fail(0, RuntimeError("late"))
    assert future.cancelled()


def test_a_future_cancelled_before_any_outcome_swallows_a_failure() -> None:
    future: Future[int] = Future()
    job = FutureJob(future)
    assert future.cancel()
    job.fail(0, RuntimeError("never seen"))  # no InvalidStateError, no RuntimeError
    assert future.cancelled()


def test_a_claimed_future_runs_through_the_fake_engine() -> None:
    engine = FakeEngine()
    future: Future[int] = Future()
    job = FutureJob(future)
    engine.submit([Chunk(job, engine.function(pow), Mode.APPLY, 0, [((2, 10), {})], indexed=False)])
    done = in_thread(lambda: engine.run())
    assert future.result(timeout=2.0) == 1024
    assert done.result(timeout=2.0) is True
