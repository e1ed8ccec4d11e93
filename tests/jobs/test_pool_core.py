"""PoolCore over the in-memory engine: the lifecycle states, and the close/join/terminate
choreography with live ``imap`` streams."""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest

from robustpool._calls import Mode
from robustpool._core import PoolCore, State
from robustpool._engine import Chunk
from robustpool._errors import PoolTerminatedError
from robustpool._jobs._gather import GatherJob, MapResult

from .fake_engine import FakeEngine, as_engine
from .streams import Source, open_stream


def _core(**kwargs: Any) -> tuple[PoolCore, FakeEngine]:
    engine = FakeEngine(**kwargs)
    return PoolCore(as_engine(engine)), engine


def _state(core: PoolCore) -> State:
    return core.state  # read afresh (an assert on core.state would narrow its type for mypy)


def test_running_then_closed_then_terminated() -> None:
    core, engine = _core()
    assert _state(core) is State.RUNNING
    core.check_running()
    core.check_owner()
    core.close()
    assert _state(core) is State.CLOSED and engine.closed == 1
    core.close()  # once only
    assert engine.closed == 1
    with pytest.raises(ValueError, match="Pool not running"):
        core.check_running()
    assert core.terminate() == []
    assert _state(core) is State.TERMINATED and engine.terminated == 1 and engine.joins == [None]
    assert core.terminate() == []  # the engine has finished: nothing more to do
    assert engine.terminated == 1
    core.close()  # no state goes back
    assert _state(core) is State.TERMINATED and engine.closed == 1
    with pytest.raises(ValueError, match="Pool not running"):
        core.check_running()


def test_join_before_close_is_a_value_error() -> None:
    core, engine = _core()
    with pytest.raises(ValueError, match="still running"):
        core.join()
    with pytest.raises(ValueError, match="still running"):
        core.join(timeout=0.01)
    assert engine.joins == []


def test_join_after_close_or_terminate_waits_for_the_engine() -> None:
    core, engine = _core()
    core.close()
    assert core.join(timeout=0.5) is True  # nothing submitted, no hold: finished
    assert engine.joins == [pytest.approx(0.5, abs=0.1)]
    core2, engine2 = _core()
    core2.terminate()
    assert core2.join() is True and engine2.joins == [None, None]


def test_a_broken_engine_is_raised_by_check_running_once_it_has_finished() -> None:
    core, engine = _core()
    broken = OSError("the supervisor died")
    engine.broken = broken
    core.check_running()  # still finishing: new work fails on its own
    engine.terminated = 1  # finished
    with pytest.raises(OSError, match="the supervisor died") as info:
        core.check_running()
    assert info.value is broken


def test_abandon_terminates_without_waiting_once() -> None:
    core, engine = _core()
    core.abandon()
    assert core.state is State.TERMINATED and engine.terminated == 1 and engine.joins == []
    core.abandon()
    assert engine.terminated == 1


def test_join_after_close_reads_the_rest_of_live_streams_input() -> None:
    core, engine = _core(drain_on_join=True)
    src = Source(20)
    it, job = open_stream(engine, src, buffersize=2)
    core.track(it, job)
    assert src.pulled == 2
    core.close()
    assert not engine.finished  # the stream still holds the engine
    assert core.join(timeout=5.0) is True
    assert src.pulled == 20 and engine.submitted_items == 20
    assert engine.holds[0].released and engine.finished
    assert list(it) == [2 * i for i in range(20)]  # the results wait for the consumer


def test_join_does_not_read_the_input_of_a_dropped_iterator() -> None:
    core, engine = _core(drain_on_join=True)
    src = Source()  # endless
    it, job = open_stream(engine, src, buffersize=2)
    core.track(it, job)
    del it
    gc.collect()
    assert job.closed
    core.close()
    began = time.monotonic()
    assert core.join(timeout=5.0) is True
    assert time.monotonic() - began < 1.0
    assert src.pulled == 2


def test_join_with_a_timeout_stops_reading_an_endless_input_at_its_deadline() -> None:
    core, engine = _core()
    src = Source()
    it, job = open_stream(engine, src, buffersize=2)
    core.track(it, job)
    core.close()
    began = time.monotonic()
    assert core.join(timeout=0.05) is False
    assert time.monotonic() - began < 1.0
    assert src.pulled > 2
    assert engine.joins and engine.joins[-1] is not None and engine.joins[-1] <= 0.05
    assert not engine.holds[0].released
    it.close()


def test_terminate_closes_live_streams_first_and_returns_the_cleanup_errors() -> None:
    core, engine = _core()
    cleaned: list[Any] = []

    def cleanup(value: Any) -> None:
        cleaned.append(value)
        if value in (2, 4):
            raise OSError(f"cannot clean {value}")

    it, job = open_stream(engine, Source(), buffersize=4, cleanup=cleanup)
    core.track(it, job)
    engine.run(engine.pending[0])
    engine.run(engine.pending[0])  # values 0 and 2 are buffered
    engine.start(engine.pending[0])  # item 2 (value 4) runs while the pool stops
    seen: list[tuple[bool, list[Any]]] = []

    def stopping(e: FakeEngine) -> None:
        seen.append((job.closed, list(cleaned)))
        e.run(e.running[0])  # a result read while the engine stops...
        seen.append((job.closed, list(cleaned)))  # ...is held for the core, not cleaned here

    engine.on_terminate = stopping
    errors = core.terminate()
    assert seen == [(True, [0, 2]), (True, [0, 2])]
    assert sorted(cleaned) == [0, 2, 4]
    assert sorted(str(e) for e in errors) == ["cannot clean 2", "cannot clean 4"]
    assert engine.cancels == [job] and engine.terminated == 1 and engine.joins == [None]
    assert core.state is State.TERMINATED
    with pytest.raises(StopIteration):
        next(it)


def test_terminate_fails_what_the_engine_still_holds() -> None:
    core, engine = _core()
    job = GatherJob(2, None, None)
    result: MapResult[Any] = MapResult(job)
    engine.submit([Chunk(job, engine.function(abs), Mode.MAP, 0, [1, -2])])
    assert core.terminate() == []
    with pytest.raises(PoolTerminatedError):
        result.get(timeout=1.0)
