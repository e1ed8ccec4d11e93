"""The executor's basics, after CPython's ``executor.py`` and ``test_process_pool.py``:
submit (keywords included), real ``concurrent.futures.Future`` instances, tracebacks,
references not kept, validation by ProcessPoolExecutor's names and error types."""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Any

import psutil
import pytest

from robustpool import RobustExecutor
from robustpool._jobs._single import RobustFuture

from .workers import (
    FAST,
    GET,
    PROMPT,
    MyObject,
    capture,
    make_object,
    mul,
    raise_runtime_error,
    released,
    square,
    wait_for,
    warm_up,
)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_submit(start_method: str) -> None:
    with RobustExecutor(2, start_method=start_method) as executor:
        assert executor.submit(pow, 2, 8).result(timeout=GET) == 256
        assert executor.submit(mul, 2, y=8).result(timeout=GET) == 16
        assert executor.submit(square, x=9).result(timeout=GET) == 81


def test_submit_passes_its_own_parameter_names_to_the_task() -> None:
    # submit's callable is positional-only: ``fn=`` and ``self=`` are the task's keywords.
    with RobustExecutor(1, start_method=FAST) as executor:
        future = executor.submit(capture, 1, self=2, fn=3)
        assert future.result(timeout=GET) == ((1,), {"self": 2, "fn": 3})
        untyped: Any = executor.submit
        with pytest.raises(TypeError):
            untyped(fn=capture, arg=1)
        with pytest.raises(TypeError):
            untyped(arg=1)
        assert executor.submit(capture).result(timeout=GET) == ((), {})


def test_futures_are_concurrent_futures() -> None:
    called: list[concurrent.futures.Future[Any]] = []
    with RobustExecutor(1, start_method=FAST) as executor:
        future = executor.submit(mul, 6, 7)
        assert isinstance(future, concurrent.futures.Future)
        assert isinstance(future, RobustFuture)
        future.add_done_callback(called.append)
        assert future.result(timeout=GET) == 42
        assert future.done() and not future.running() and not future.cancelled()
        assert future.exception(timeout=0) is None
        assert not future.cancel()  # finished: too late, as in the standard library
        late: list[concurrent.futures.Future[Any]] = []
        future.add_done_callback(late.append)  # on a done future: called at once, here
        assert late == [future]
        # set_* belong to the executor, but the standard library's state machine still guards them.
        with pytest.raises(concurrent.futures.InvalidStateError):
            future.set_result(0)
    assert called == [future]


def test_result_timeout_is_the_builtin_timeout_error(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with RobustExecutor(1, start_method=FAST) as executor, released(release):
        future = executor.submit(wait_for, str(release), "late")
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            future.result(timeout=0.1)
        with pytest.raises(concurrent.futures.TimeoutError):
            future.exception(timeout=0.1)
        assert time.monotonic() - t0 < PROMPT
        assert not future.done()
        release.touch()
        assert future.result(timeout=GET) == "late"


def test_task_exception_keeps_type_args_and_worker_traceback() -> None:
    with RobustExecutor(1, start_method=FAST) as executor:
        future = executor.submit(raise_runtime_error, 123)
        exc = future.exception(timeout=GET)
        with pytest.raises(RuntimeError):
            future.result(timeout=0)
    assert type(exc) is RuntimeError
    assert exc.args == (123,)
    text = "".join(traceback.format_exception(exc))
    assert "raise_runtime_error" in text
    assert "raise RuntimeError(code)  # a line the traceback test looks for" in text
    assert os.path.basename(raise_runtime_error.__code__.co_filename) in text


def test_map_does_not_keep_the_results_it_yielded() -> None:
    # CPython issue #14406: the result iterator drops each result once yielded.
    with RobustExecutor(2, start_method=FAST) as executor:
        for obj in executor.map(make_object, range(10)):
            ref = weakref.ref(obj)
            del obj
            gc.collect()
            assert ref() is None


def test_no_stale_references() -> None:
    collected = threading.Event()
    with RobustExecutor(1, start_method=FAST) as executor:
        obj = MyObject()
        ref = weakref.ref(obj, lambda _: collected.set())
        future = executor.submit(obj.method)
        del obj
        assert future.result(timeout=GET) is None
        del future
        gc.collect()
        # Collected by the gc.collect() above once nothing holds it; a thread of the executor
        # that still did for a moment lets go soon after.
        assert collected.wait(1.0), "the executor still holds the submitted bound method's object"
        assert ref() is None


def test_attributes_repr_worker_pids_and_stats() -> None:
    executor = RobustExecutor(2, start_method=FAST)
    try:
        assert executor.max_workers == 2
        assert repr(executor) == "<RobustExecutor state=running max_workers=2>"
        pids = warm_up(executor, 2)
        assert len(set(pids)) == 2 and os.getpid() not in pids
        children = {p.pid for p in psutil.Process().children(recursive=True)}
        assert set(pids) <= children
        assert [f.result(timeout=GET) for f in [executor.submit(square, i) for i in range(10)]] == [i * i for i in range(10)]
        stats = executor.stats()
        assert stats.tasks_done >= 14  # the warm-up's 4 and these 10
        assert stats.workers_alive == 2
        assert stats.replaced == ()
    finally:
        executor.shutdown()
    assert repr(executor) == "<RobustExecutor state=shut down max_workers=2>"


def test_default_max_workers_is_the_cpu_count() -> None:
    with RobustExecutor(start_method=FAST) as executor:
        assert executor.max_workers == (os.cpu_count() or 1)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_mp_context_picks_how_it_starts(method: str) -> None:
    with RobustExecutor(1, mp_context=multiprocessing.get_context(method)) as executor:
        assert executor.submit(mul, 3, 4).result(timeout=GET) == 12
    with pytest.raises(ValueError, match="contradicts"):
        RobustExecutor(1, mp_context=multiprocessing.get_context("fork"), start_method="spawn")


@pytest.mark.parametrize("number", [0, -1])
def test_max_workers_out_of_range(number: int) -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        RobustExecutor(max_workers=number)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_workers": "2"},
        {"max_workers": 2.0},
        {"max_workers": True},
        {"max_tasks_per_child": "3"},
        {"max_tasks_per_child": 1.5},
        {"mp_context": 42},
        {"initializer": 42},
        {"initargs": 5},
        {"retries": "1"},
        {"task_timeout": "1"},
        {"memory_limit": 1.5},
        {"start_method": 1},
    ],
    ids=lambda kw: "-".join(f"{k}={v!r}" for k, v in kw.items()),
)
def test_wrong_type_is_a_type_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError) as info:
        RobustExecutor(**kwargs)
    assert not isinstance(info.value, ValueError)  # unlike multiprocessing.Pool's maxtasksperchild


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tasks_per_child": 0},
        {"max_tasks_per_child": -1},
        {"retries": -1},
        {"task_timeout": 0},
        {"task_timeout": -1.0},
        {"memory_limit": 0},
        {"memory_limit": "lots"},
        {"start_method": "vfork"},
        {"buffersize": 0},
        {"close_timeout": 0},
    ],
    ids=lambda kw: "-".join(f"{k}={v!r}" for k, v in kw.items()),
)
def test_out_of_range_is_a_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        RobustExecutor(1, **kwargs)
    assert not isinstance(info.value, TypeError)


def test_calls_are_validated_at_the_call() -> None:
    not_callable: Any = 42
    with RobustExecutor(1, start_method=FAST) as executor:
        with pytest.raises(TypeError):
            executor.submit(not_callable)
        with pytest.raises(TypeError):
            executor.map(not_callable, range(3))
        for chunksize in (0, -1):
            with pytest.raises(ValueError):
                executor.map(pow, range(3), range(3), chunksize=chunksize)
        with pytest.raises(ValueError):
            executor.map(square, range(3), buffersize=0)
        with pytest.raises(TypeError):
            executor.map(square, range(3), cleanup=not_callable)
        assert executor.submit(square, 3).result(timeout=GET) == 9
