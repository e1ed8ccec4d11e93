"""``map_async``'s GatherJob behind a MapResult, without a process: slices delivered out of
order, failures, the cleanup of values nobody will see, an empty map."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from robustpool._calls import Mode
from robustpool._engine import Chunk
from robustpool._jobs._gather import GatherJob, MapResult

from .fake_engine import FakeEngine, in_thread


def _gather(
    length: int, cleanup: list[object] | None = None, failing_cleanup: set[object] | None = None
) -> tuple[GatherJob, MapResult[Any], list[list[Any]], list[BaseException]]:
    done: list[list[Any]] = []
    errors: list[BaseException] = []

    def clean(value: object) -> None:
        assert cleanup is not None
        cleanup.append(value)
        if failing_cleanup and value in failing_cleanup:
            raise OSError(f"cannot clean {value!r}")

    job = GatherJob(length, done.append, errors.append, clean if cleanup is not None else None)
    return job, MapResult(job), done, errors


def test_values_come_in_order_whatever_the_order_of_the_slices() -> None:
    job, result, done, _ = _gather(7)
    for index, values in [(5, ["f", "g"]), (0, ["a"]), (3, ["d", "e"]), (1, ["b", "c"])]:
        assert not result.ready()
        job.deliver(index, values)
        job.flush()
    assert result.ready() and result.successful()
    assert result.get(timeout=0) == list("abcdefg")
    assert done == [list("abcdefg")]


def test_the_first_error_to_arrive_is_raised_once_every_item_is_accounted() -> None:
    job, result, done, errors = _gather(5)
    first, second = ValueError("item 3"), KeyError("item 1")
    job.fail(3, first)
    job.deliver(0, [0])
    job.fail(1, second)
    job.fail(3, RuntimeError("item 3 again"))  # the same item twice counts once
    assert not result.ready()  # items 2 and 4 are still out
    job.deliver(4, [4])
    assert not result.ready()
    job.deliver(2, [2])
    assert result.ready() and not result.successful()
    with pytest.raises(ValueError, match="item 3") as info:
        result.get()
    assert info.value is first
    assert done == [] and errors == [first]


def test_a_failed_map_cleans_every_successful_value_exactly_once() -> None:
    cleaned: list[object] = []
    job, result, _, errors = _gather(6, cleaned)
    job.deliver(0, ["a", "b"])
    job.fail(2, ValueError("c"))
    job.deliver(3, ["d"])
    job.fail(4, ValueError("e"))
    assert cleaned == []  # not before every item is accounted
    job.deliver(5, ["f"])
    assert sorted(map(str, cleaned)) == ["a", "b", "d", "f"]
    with pytest.raises(ValueError, match="c"):
        result.get()
    assert len(errors) == 1
    job.fail(2, ValueError("again"))  # nothing more is cleaned
    assert len(cleaned) == 4


def test_a_successful_map_cleans_nothing() -> None:
    cleaned: list[object] = []
    job, result, _, _ = _gather(3, cleaned)
    job.deliver(0, [1, 2, 3])
    assert result.get() == [1, 2, 3] and cleaned == []


def test_cleanup_errors_are_logged_noted_and_never_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    cleaned: list[object] = []
    job, result, _, _ = _gather(4, cleaned, failing_cleanup={"a", "c"})
    with caplog.at_level(logging.ERROR, logger="robustpool"):
        job.deliver(0, ["a", "b", "c"])
        job.fail(3, LookupError("d"))
    assert cleaned == ["a", "b", "c"]
    with pytest.raises(LookupError) as info:
        result.get()
    assert "2 cleanup call(s) also failed" in "\n".join(info.value.__notes__)
    assert sum("cleanup(" in r.getMessage() for r in caplog.records) == 2


def test_an_empty_map_is_ready_at_once() -> None:
    _, result, done, _ = _gather(0)
    assert result.ready() and result.successful()
    assert result.get(timeout=0) == [] and done == [[]]


def test_a_map_result_hides_the_job_side() -> None:
    _, result, _, _ = _gather(1)
    for name in ("deliver", "fail", "drop", "claim", "flush"):
        assert not hasattr(result, name), name
    assert type(result).__module__ == "robustpool"


def test_a_map_through_the_fake_engine_from_its_thread() -> None:
    """Chunks run out of order on the engine's thread, one burst each; a consumer waits."""
    engine = FakeEngine()
    job, result, done, _ = _gather(10)
    assert job.cancellable is False
    ref = engine.function(lambda x: x * x)
    engine.submit([Chunk(job, ref, Mode.MAP, start, range(start, min(start + 3, 10))) for start in range(0, 10, 3)])
    waiting = in_thread(lambda: result.get(timeout=5.0))

    def engine_side() -> None:
        for chunk in reversed(list(engine.pending)):
            engine.run(chunk)

    in_thread(engine_side).result(timeout=2.0)
    assert waiting.result(timeout=2.0) == [x * x for x in range(10)]
    assert done == [[x * x for x in range(10)]]


def test_a_second_outcome_for_an_item_is_cleaned_and_logged_never_written_into_the_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An item delivered twice (an engine's bug: a re-run whose first result also came)
    must not overwrite the list the caller already holds, nor count twice towards the end."""
    cleaned: list[object] = []
    job, result, done, _ = _gather(3, cleaned)
    job.deliver(0, ["a"])
    job.deliver(0, ["a again"])  # before the end: it must not count as item 1 or 2
    job.fail(0, ValueError("after its value"))  # an error for a delivered item counts nothing
    assert not result.ready()
    job.deliver(1, ["b", "c"])
    assert result.get(timeout=0) == ["a", "b", "c"]
    with caplog.at_level(logging.ERROR, logger="robustpool"):
        job.deliver(1, ["b again", "c again"])  # after the end: the caller's list stays as it was
    assert result.get(timeout=0) == ["a", "b", "c"] and done == [["a", "b", "c"]]
    assert cleaned == ["a again", "b again", "c again"]
    assert "arrived twice" in caplog.text
