"""The public surface and the errors: exports are guarded, every error round-trips."""

from __future__ import annotations

import pickle
import signal

import cloudpickle
import pytest

import robustpool
from robustpool import (
    InitializerError,
    PoolTerminatedError,
    RemoteTaskError,
    RobustPoolError,
    TaskSerializationError,
    TaskTimeoutError,
    WorkerLostError,
    WorkerStartError,
)

EXPECTED_PUBLIC = {
    "AsyncResult",
    "IMapIterator",
    "InitializerError",
    "MapIterator",
    "MapResult",
    "PoolStats",
    "PoolTerminatedError",
    "RemoteTaskError",
    "RobustExecutor",
    "RobustFuture",
    "RobustPool",
    "RobustPoolError",
    "RobustThreadPool",
    "RobustThreadPoolExecutor",
    "Scope",
    "TaskSerializationError",
    "TaskTimeoutError",
    "WorkerLostError",
    "WorkerStartError",
    "WorkerStats",
    "multi_scope",
}


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert isinstance(robustpool.__all__, tuple)
    assert set(robustpool.__all__) == EXPECTED_PUBLIC
    assert set(robustpool._WHERE) == EXPECTED_PUBLIC  # the lazy namespace serves every name
    for name in robustpool.__all__:
        assert getattr(robustpool, name).__module__ == "robustpool"  # tracebacks print robustpool.WorkerLostError
    # robustpool.testing (chaos for users' pipelines) and robustpool.dask (the Dask engine) are public on
    # purpose; each shows up here once imported.
    public_modules = [m for m in dir(robustpool) if not m.startswith("_") and m not in EXPECTED_PUBLIC | {"testing", "dask"}]
    assert public_modules == [], "implementation modules must stay _private"


SAMPLES: list[RobustPoolError] = [
    WorkerLostError(4242, -9, 5, "kill_self(5)", "running", ((4241, -9), (4242, -9)), 3 * 2**30, None),
    WorkerLostError(7, 3),
    WorkerLostError(8, None, reason="its supervisor died"),
    TaskTimeoutError(0.5, 0.61, 3, "slow(3)", 99),
    WorkerLostError(4243, -11, 2, "f(2)", host="tcp://10.0.0.7:40001"),  # on a Dask worker
    WorkerLostError(None, None, 2, "f(2)", reason="Dask lost the worker", host="tcp://10.0.0.7:40001"),
    TaskTimeoutError(0.5, 0.61, 3, "slow(3)", 99, "tcp://10.0.0.7:40001"),
    TaskSerializationError("pickling the task in the owner", "TypeError: nope", 2, "f(<lock>)"),
    RemoteTaskError("mod.Weird", "boom", "Traceback (most recent call last):\n  ...\nmod.Weird: boom\n"),
    InitializerError(3, "Traceback...\nValueError: bad init\n"),
    WorkerStartError(8, "fork failed: [Errno 11] Resource temporarily unavailable"),
    PoolTerminatedError(),
]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("err", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_survives_a_round_trip(err: RobustPoolError, dumps: object) -> None:
    back = pickle.loads(dumps(err))  # type: ignore[operator]
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert vars(back) == vars(err)


def test_worker_lost_message_diagnoses() -> None:
    err = WorkerLostError(4242, -9, 5, "kill_self(5)", "running", (), 3 * 2**30)
    assert err.signal is signal.SIGKILL
    text = str(err)
    assert text.startswith("worker 4242 died from SIGKILL (-9) while running task #5 kill_self(5)")
    assert "OOM" in text and "3072.0 MiB" in text
    segv = str(WorkerLostError(1, -11, 0, "f(0)"))
    assert "SIGSEGV (-11)" in segv and "native code" in segv
    exited = str(WorkerLostError(1, 3, None, "f()"))
    assert "exit code 3" in exited and "os._exit(3)" in exited
    retried = WorkerLostError(2, -9, 1, "f(1)", attempts=((1, -9), (2, -9)))
    assert "killed 2 workers" in str(retried) and "pid 1: SIGKILL (-9)" in str(retried)


def test_errors_name_who_is_at_fault() -> None:
    for cls in (
        WorkerLostError,
        TaskTimeoutError,
        TaskSerializationError,
        RemoteTaskError,
        InitializerError,
        PoolTerminatedError,
    ):
        assert issubclass(cls, RobustPoolError) and cls.__doc__
