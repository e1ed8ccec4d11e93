"""Errors as a program meets them, and manager proxies: the public classes live in the
``robustpool`` namespace and survive a pickle round trip, as do the pool's stats; a manager
Namespace works as a task's argument and in the initializer, with either start method; an
argument or a result that cannot be pickled fails with a TaskSerializationError that is also
the original error's type (TypeError, the reducer's RuntimeError, ValueError) and stays so
through a pickle round trip; and the traceback of a function defined in ``__main__`` shows
its real file and line (items 14, 15, 16 and 18 of the hardening brief).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

import robustpool
from robustpool import (
    InitializerError,
    PoolTerminatedError,
    RemoteTaskError,
    RobustPool,
    TaskSerializationError,
    TaskTimeoutError,
    WorkerLostError,
)

from ._support import (
    RESULT_WORKER,
    START_METHODS,
    TASK_OWNER,
    _count_initializer,
    _env,
    _outcome,
    _script,
    _set_pid_on,
    _square,
    _unpicklable_result,
)

# === 14. smaller things: the public namespace ==============================================


def test_public_classes_live_in_the_robustpool_namespace() -> None:
    for name in robustpool.__all__:
        obj = getattr(robustpool, name)
        if isinstance(obj, type):
            assert obj.__module__ == "robustpool", f"{name}.__module__ is {obj.__module__!r}"
    err = WorkerLostError(4242, -9, 5, "kill_self(5)")
    text = "".join(traceback.format_exception(err))
    assert "robustpool.WorkerLostError: worker 4242" in text, text
    samples: list[BaseException] = [
        err,
        TaskTimeoutError(0.5, 0.61, 3, "slow(3)", 99),
        TaskSerializationError(TASK_OWNER, "TypeError: nope", 2, "f(<lock>)"),
        RemoteTaskError("mod.Weird", "boom", "Traceback...\n"),
        InitializerError(3, "Traceback...\nValueError: bad init\n"),
        PoolTerminatedError(),
    ]
    for sample in samples:
        back = pickle.loads(pickle.dumps(sample))
        assert type(back) is type(sample) and str(back) == str(sample)
    with RobustPool(1) as pool:
        pool.map(abs, range(3))
        stats = pool.stats()
    assert pickle.loads(pickle.dumps(stats)) == stats


# === 15. manager proxies work in tasks and initializers ==================================


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_manager_namespace_works_in_a_task(start_method: str) -> None:
    with multiprocessing.Manager() as manager:
        ns = manager.Namespace()
        ns.x = 0  # used in the owner first, as a program would: the owner now holds a connection
        with RobustPool(1, start_method=start_method) as pool:
            got = _outcome(pool.apply_async(_set_pid_on, (ns,)), 20)
            deadline = time.monotonic() + 10
            while not (pids := pool.worker_pids()) and time.monotonic() < deadline:
                time.sleep(0.01)  # the worker's pid comes from the supervisor, maybe after its result
        assert isinstance(got, int), f"{type(got).__name__}: {got}"
        assert got == ns.x and got in pids and got != os.getpid()


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_manager_namespace_works_in_the_initializer(start_method: str) -> None:
    """CPython's TestInitializers.test_pool_initializer, on a RobustPool."""
    with multiprocessing.Manager() as manager:
        ns = manager.Namespace()
        ns.test = 0
        with pytest.raises(TypeError):
            RobustPool(initializer=1)  # type: ignore[arg-type]
        pool = RobustPool(1, _count_initializer, (ns,), start_method=start_method)
        try:
            pool.close()
            pool.join(timeout=30)
        finally:
            pool.terminate()
        assert ns.test == 1


# === 16. pickling errors keep the original error's type ==================================


class _RefusesToPickle:
    """CPython's test_map_unplicklable argument: its ``__reduce__`` raises RuntimeError."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise RuntimeError("cannot pickle")


def _assert_round_trip(err: BaseException, *types: type[BaseException], phase: str) -> None:
    back = pickle.loads(pickle.dumps(err))
    for t in types:
        assert isinstance(back, t), f"{type(back).__mro__} lost {t.__name__} in a pickle round trip"
    assert back.phase == phase


def test_an_unpicklable_argument_error_is_also_a_type_error() -> None:
    with RobustPool(2) as pool:
        got = _outcome(pool.map_async(str, [threading.Lock()]), 20)
    assert isinstance(got, TaskSerializationError), repr(got)
    assert isinstance(got, TypeError), f"{type(got).__mro__} is not a TypeError"
    assert TASK_OWNER in str(got)
    _assert_round_trip(got, TaskSerializationError, TypeError, phase=TASK_OWNER)


def test_map_unpicklable_raises_the_reducers_error() -> None:
    """CPython's test_map_unplicklable: the argument's __reduce__ raises RuntimeError."""
    with RobustPool(2) as pool:
        got = _outcome(pool.map_async(_square, [_RefusesToPickle()] * 10), 20)  # type: ignore[arg-type]  # on purpose
    assert isinstance(got, RuntimeError), f"{type(got).__mro__}: {got}"
    assert isinstance(got, TaskSerializationError) and got.phase == TASK_OWNER
    _assert_round_trip(got, TaskSerializationError, RuntimeError, phase=TASK_OWNER)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_an_unpicklable_result_error_keeps_its_type(start_method: str) -> None:
    with RobustPool(2, start_method=start_method) as pool:
        got = _outcome(pool.map_async(_unpicklable_result, [1]), 20)
    assert isinstance(got, TaskSerializationError) and got.phase == RESULT_WORKER, repr(got)
    assert isinstance(got, ValueError), f"{type(got).__mro__} is not a ValueError"
    assert RESULT_WORKER in str(got)
    _assert_round_trip(got, TaskSerializationError, ValueError, phase=RESULT_WORKER)


# === 18. tracebacks of __main__ functions show the real file and line =================

MAIN_BOOM = """
    import sys, traceback
    from robustpool import RobustPool

    def boom(x):
        raise ValueError(x)

    if __name__ == "__main__":
        pool = RobustPool(1, start_method=sys.argv[1])
        try:
            pool.apply_async(boom, (1,)).get(timeout=20)
        except ValueError:
            print(traceback.format_exc(), flush=True)
        finally:
            pool.terminate()
"""


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_main_functions_traceback_shows_its_file_and_line(start_method: str, tmp_path: Path) -> None:
    script = _script(tmp_path, "script.py", MAIN_BOOM)
    line = textwrap.dedent(MAIN_BOOM).splitlines().index("    raise ValueError(x)") + 1
    done = subprocess.run(
        [sys.executable, str(script), start_method], env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f'File "{script}", line {line}, in boom' in done.stdout, done.stdout
    assert "raise ValueError(x)" in done.stdout, done.stdout
