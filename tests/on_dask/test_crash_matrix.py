"""The crash matrix through the Dask engine, on a real ``distributed.LocalCluster``.

The rows of ``tests/test_crash_matrix.py`` (a task's trip, phase by phase, crossed with the
ways it fails), a timeout and a memory kill, each run by a 2-process pool on a 2-worker
cluster of this module's own. Each row expects what the same row expects on one machine,
plus what only a cluster can break: the error names the Dask worker it happened on, the
failing item is the only one that fails (no neighbour blamed), and afterwards the cluster
has the same Dask workers, with the same processes: no task killed a Dask worker.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("distributed")

from test_crash_matrix import (
    BAD,
    RESULT_OWNER,
    RESULT_WORKER,
    TASK_OWNER,
    TASK_WORKER,
    WAIT,
    Boom,
    Check,
    Ctx,
    TaskBomb,
    Unpicklable,
    _assert_others_ok,
    _bad,
    _collect,
    _one_bad_item,
    _own_type,
    _serialization,
    _unpickle_error_among_batched,
    _work,
)

from robustpool import RobustPool, TaskTimeoutError, WorkerLostError
from robustpool.dask import DaskEngine

from . import cluster
from .tasks import hog


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with cluster.started() as c:
        yield c


def _lost(phase: str, sig: signal.Signals | None = None, exitcode: int | None = None, index: int = BAD) -> Check:
    """Expect a WorkerLostError for item ``index`` naming the signal or exit code, the
    worker process's pid and the Dask worker it ran on."""

    def check(err: BaseException, ctx: Ctx) -> None:
        assert type(err) is WorkerLostError, repr(err)
        if sig is not None:
            assert err.signal is sig and err.exitcode == -sig, repr(err)
            assert f"{sig.name} ({-sig})" in str(err)
        else:
            assert err.signal is None and err.exitcode == exitcode, repr(err)
            assert f"exit code {exitcode}" in str(err)
        assert err.task_index == index
        assert err.task is not None and err.task.startswith("_work("), err.task
        assert err.phase == phase
        assert f"while {phase} task #{index} " in str(err)
        assert err.pid is not None and err.pid > 0 and err.pid != ctx.owner_pid
        assert err.host is not None and err.host in _ADDRESSES, (err.host, _ADDRESSES)
        assert f"on {err.host}" in str(err)

    return check


def _timed_out(ctx: Ctx) -> None:
    items: list[Any] = list(range(6))
    items[BAD] = ("sleep", 60)
    began = time.monotonic()
    got = _collect(ctx.pool.imap(_work, items), len(items))
    err = got[BAD]
    assert isinstance(err, TaskTimeoutError), repr(err)
    assert err.timeout == 1.0 and 1.0 <= err.elapsed < 10, repr(err)
    assert err.task_index == BAD and err.task == "_work(('sleep', 60))"
    assert err.host in _ADDRESSES and err.pid is not None, repr(err)
    assert time.monotonic() - began < 20  # the task was stopped, not waited for
    _assert_others_ok(items, got, {BAD})


def _memory_killed(ctx: Ctx) -> None:
    err: BaseException | None = None
    try:
        ctx.pool.apply_async(hog, (400,)).get(timeout=WAIT)
    except WorkerLostError as exc:
        err = exc
    assert isinstance(err, WorkerLostError), repr(err)
    assert err.signal is signal.SIGKILL and "memory" in str(err), str(err)
    assert err.host in _ADDRESSES
    assert ctx.pool.map(_work, range(4)) == [0, 1, 4, 9]


def _sigkill_inside_chunk(ctx: Ctx) -> None:
    items: list[Any] = list(range(16))
    items[6] = ("signal", signal.SIGKILL)
    got = _collect(ctx.pool.imap(_work, items, chunksize=4), 16)
    _lost("running", signal.SIGKILL, index=6)(got[6], ctx)
    _assert_others_ok(items, got, {6})


def _sigkill_among_batched(ctx: Ctx) -> None:
    """Tiny items the engine merges into one Dask task: the one that dies fails alone."""
    items: list[Any] = list(range(400))
    items[150] = ("signal", signal.SIGKILL)
    got = _collect(ctx.pool.imap(_work, items), 400)
    _lost("running", signal.SIGKILL, index=150)(got[150], ctx)
    _assert_others_ok(items, got, {150})


@dataclass(frozen=True)
class Row:
    id: str
    run: Callable[[Ctx], None]
    pool_kwargs: dict[str, Any] = field(default_factory=dict)


ROWS = [
    # 1. pickling the task in the owner
    Row("task-pickle-error", _one_bad_item(_bad(Unpicklable()), _serialization(TASK_OWNER, "Boom: refuse", Boom))),
    # 2. unpickling the task in the worker process (never in the Dask worker)
    Row("task-unpickle-error", _one_bad_item(_bad(TaskBomb("error")), _serialization(TASK_WORKER, "Boom: error"))),
    Row("task-unpickle-sysexit", _one_bad_item(_bad(TaskBomb("sys_exit")), _serialization(TASK_WORKER, "SystemExit: 4"))),
    Row("task-unpickle-os_exit", _one_bad_item(_bad(TaskBomb("os_exit")), _lost("unpickling", exitcode=3))),
    Row("task-unpickle-segfault", _one_bad_item(_bad(TaskBomb("segfault")), _lost("unpickling", signal.SIGSEGV))),
    # 3. running the function
    Row("run-segfault", _one_bad_item(_bad(("fault", "segfault")), _lost("running", signal.SIGSEGV))),
    Row("run-sysexit", _one_bad_item(_bad(("fault", "sys_exit")), _own_type(SystemExit, lambda e: e.args == (4,)))),
    Row("run-os_exit", _one_bad_item(_bad(("fault", "os_exit")), _lost("running", exitcode=3))),
    Row("run-sigkill", _one_bad_item(_bad(("signal", signal.SIGKILL)), _lost("running", signal.SIGKILL))),
    Row("run-sigterm", _one_bad_item(_bad(("signal", signal.SIGTERM)), _lost("running", signal.SIGTERM))),
    Row("run-error", _one_bad_item(_bad(("fault", "error")), _own_type(Boom, lambda e: "error on purpose" in str(e)))),
    Row("run-timeout", _timed_out, {"task_timeout": 1.0}),
    Row("run-memory-kill", _memory_killed, {"memory_limit": "100MiB"}),
    Row("chunk-item-sigkill", _sigkill_inside_chunk),
    Row("batched-item-sigkill", _sigkill_among_batched),
    Row("batched-item-unpickle-error", _unpickle_error_among_batched),
    # 4. pickling the result in the worker process
    Row("result-pickle-segfault", _one_bad_item(_bad(("result", "segfault")), _lost("pickling the result of", signal.SIGSEGV))),
    Row("result-pickle-os_exit", _one_bad_item(_bad(("result", "os_exit")), _lost("pickling the result of", exitcode=3))),
    Row("result-pickle-error", _one_bad_item(_bad(("result", "error")), _serialization(RESULT_WORKER, "Boom: error"))),
    Row("result-pickle-sysexit", _one_bad_item(_bad(("result", "sys_exit")), _serialization(RESULT_WORKER, "SystemExit: 4"))),
    # 5. unpickling the result in the owner (the Dask worker passes it on unopened)
    Row(
        "result-unpickle-error",
        _one_bad_item(lambda ctx: ("owner", ("error", ctx.owner_pid)), _serialization(RESULT_OWNER, "Boom: refuse", Boom)),
    ),
    Row(
        "result-unpickle-exit",
        _one_bad_item(lambda ctx: ("owner", ("exit", ctx.owner_pid)), _serialization(RESULT_OWNER, "SystemExit", SystemExit)),
    ),
]

_ADDRESSES: list[str] = []  # the cluster's Dask workers when the row started


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_row(row: Row, client: Any, caplog: pytest.LogCaptureFixture) -> None:
    before = cluster.worker_pids(client)
    _ADDRESSES[:] = sorted(before)
    import os

    with RobustPool(2, engine=DaskEngine(client), **row.pool_kwargs) as pool:
        ctx = Ctx(pool, "dask", os.getpid(), caplog)
        row.run(ctx)
        assert pool.apply_async(_work, (7,)).get(timeout=WAIT) == 49  # the pool still runs
    after = cluster.worker_pids(client)
    print(f"{row.id}: Dask workers before {sorted(before.items())}, after {sorted(after.items())}")
    assert after == before, "a Dask worker died or was replaced: a task must never take one down"
