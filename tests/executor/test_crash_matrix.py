"""The crash matrix (``tests/test_crash_matrix.py``) through ``RobustExecutor.submit``.

CPython's ``test_concurrent_futures/test_deadlock.py`` checks that each of these crashes
*breaks* a ProcessPoolExecutor without deadlocking it (BrokenProcessPool, and a new executor
for the next call). Here the expectation is inverted: each crash fails exactly one future,
with an error naming what went wrong, every other future gets its result, and the executor
keeps working (a follow-up ``submit`` and ``map`` succeed).

A single-item row submits ``N_ITEMS`` calls of ``workers.work`` on a fresh 2-worker
executor, item ``BAD`` being the bad one, and waits for all of them (bounded). The phases,
in the order a call meets them, with the CPython test each inverts:

* ``task-pickle``     pickling the argument in the owner (test_error_at_task_pickle);
* ``task-unpickle``   unpickling it in the worker (test_{error,exit,crash}_at_task_unpickle);
* ``run``             running the function (test_{crash,exit,error}_during_func_exec_on_worker),
                      plus signals, ``os._exit`` and an exception whose unpickling fails;
* ``result-pickle``   pickling the result in the worker (test_*_during_result_pickle_on_worker);
* ``result-unpickle`` unpickling the result in the owner (test_*_during_result_unpickle_in_result_handler);
* ``reply``           the result's trip back spoiled (descriptors closed, over the frame
                      limit, garbage on the socket).

Then whole-executor scenarios that apply to futures: done callbacks that raise, a failing
initializer (the one row after which the executor is broken by design), workers killed
from outside (idle, busy with a big argument or result, two at once), the supervisor
killed, a crash on every worker, and a death inside a ``map`` chunk. The single-item rows
run under both start methods, the scenarios under the default (spawn, under pytest).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Future, wait
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from robustpool import (
    InitializerError,
    RemoteTaskError,
    RobustExecutor,
    RobustPoolError,
    TaskSerializationError,
    WorkerLostError,
)

from .workers import (
    Boom,
    TaskBomb,
    Unpicklable,
    announce_then_wait,
    failing_initializer,
    shrink_frames,
    spoil_reply,
    wait_until,
    work,
)

BAD = 3  # position of the bad item in the single-item rows
N_ITEMS = 8
BIG = 8 * 2**20  # bytes: far more than a socket buffer holds
WAIT = 30.0  # seconds: every wait in this file is bounded by this
REPLY_WAIT = 20.0  # seconds: the reply rows' bound (their failure would be a respawn loop or a hang)


@dataclass(frozen=True)
class Ctx:
    executor: RobustExecutor
    owner_pid: int
    caplog: pytest.LogCaptureFixture
    tmp_path: Any


Check = Callable[[BaseException, Ctx], None]


@dataclass(frozen=True)
class Row:
    id: str
    run: Callable[[Ctx], None]
    executor_kwargs: dict[str, Any] = field(default_factory=dict)
    usable_after: bool = True  # False only where the executor is broken by design


def _outcomes(futures: Sequence[Future[Any]], timeout: float = WAIT) -> list[Any]:
    """Each future's value, or its exception (SystemExit included), once all are done."""
    _, not_done = wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} of {len(futures)} futures still not done after {timeout} s"
    got: list[Any] = []
    for f in futures:
        exc = f.exception(timeout=0)
        got.append(exc if exc is not None else f.result(timeout=0))
    return got


def _assert_others_ok(items: Sequence[Any], got: Sequence[Any], failing: set[int]) -> None:
    for i, (item, outcome) in enumerate(zip(items, got, strict=True)):
        if i not in failing:
            assert outcome == item * item, f"item {i}: {outcome!r}"


def _one_bad_item(make_bad: Callable[[Ctx], Any], check: Check) -> Callable[[Ctx], None]:
    """A row: ``N_ITEMS`` submits of ``work``, item ``BAD`` being ``make_bad(ctx)``."""

    def run(ctx: Ctx) -> None:
        items: list[Any] = list(range(N_ITEMS))
        items[BAD] = make_bad(ctx)
        futures = [ctx.executor.submit(work, x) for x in items]
        got = _outcomes(futures)
        err = got[BAD]
        assert isinstance(err, BaseException), f"item {BAD} should have failed, got {err!r}"
        check(err, ctx)
        _assert_others_ok(items, got, {BAD})

    return run


def _bad(value: Any) -> Callable[[Ctx], Any]:
    return lambda ctx: value


def _lost(phase: str, sig: signal.Signals | None = None, exitcode: int | None = None, task: str = "work(") -> Check:
    """Expect a WorkerLostError naming the signal or exit code, the phase and the call."""

    def check(err: BaseException, ctx: Ctx) -> None:
        assert type(err) is WorkerLostError, repr(err)
        if sig is not None:
            assert err.signal is sig
            assert err.exitcode == -sig
            assert f"{sig.name} ({-sig})" in str(err)
        else:
            assert err.signal is None
            assert err.exitcode == exitcode
            assert f"exit code {exitcode}" in str(err)
        assert err.task is not None and err.task.startswith(task), err.task
        assert err.task_index is None  # a submit has no index
        assert err.phase == phase
        assert f"while {phase} a task {task}" in str(err), str(err)
        assert err.pid is not None and err.pid > 0 and err.pid != ctx.owner_pid
        assert err.attempts == ((err.pid, err.exitcode),)

    return check


TASK_OWNER = "pickling the task in the owner"
TASK_WORKER = "unpickling the task in the worker"
RESULT_WORKER = "pickling the result in the worker"
RESULT_OWNER = "unpickling the result in the owner"


def _serialization(phase: str, detail: str, cause: type[BaseException] | None = None) -> Check:
    """Expect a TaskSerializationError for the call in ``phase`` mentioning ``detail``."""

    def check(err: BaseException, ctx: Ctx) -> None:
        assert isinstance(err, TaskSerializationError), repr(err)
        assert err.phase == phase
        assert detail in err.detail, err.detail
        assert err.task_index is None
        assert f"error {phase} for a task work(" in str(err), str(err)
        if cause is not None:
            assert isinstance(err.__cause__, cause), repr(err.__cause__)

    return check


def _own_type(exc_type: type[BaseException], check_value: Callable[[BaseException], bool]) -> Check:
    """Expect the task's own exception, rebuilt in the owner with its own type."""

    def check(err: BaseException, ctx: Ctx) -> None:
        assert type(err) is exc_type, repr(err)
        assert check_value(err), repr(err)

    return check


def _remote(type_name: str) -> Check:
    """Expect a RemoteTaskError standing for an exception that could not be rebuilt."""

    def check(err: BaseException, ctx: Ctx) -> None:
        assert type(err) is RemoteTaskError, repr(err)
        assert type_name in err.type_name
        assert "Traceback" in err.remote_traceback and "work" in err.remote_traceback

    return check


# -- whole-executor scenarios --


def _callbacks_raise(ctx: Ctx) -> None:
    seen: list[Any] = []

    def bad_callback(f: Future[Any]) -> None:
        raise Boom(f"callback got {f.result(timeout=0)!r}")

    with ctx.caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        first = ctx.executor.submit(work, 5)
        first.add_done_callback(bad_callback)
        failing = ctx.executor.submit(work, ("fault", "error"))
        failing.add_done_callback(lambda f: seen.append(f.exception(timeout=0)))
        others = [ctx.executor.submit(work, i) for i in range(6)]
        for f in others:
            f.add_done_callback(lambda f: seen.append(f.result(timeout=0)))
        assert first.result(timeout=WAIT) == 25
        with pytest.raises(Boom, match="error on purpose"):
            failing.result(timeout=WAIT)
        assert [f.result(timeout=WAIT) for f in others] == [i * i for i in range(6)]
        # Waiters wake before the callbacks run (as in the standard library): wait for them too.
        wait_until(lambda: len(seen) == 7, "every done callback to run")
        wait_until(lambda: any(r.name == "concurrent.futures" for r in ctx.caplog.records), "the raising callback's log")
    assert sorted(x for x in seen if isinstance(x, int)) == [i * i for i in range(6)]
    assert sum(isinstance(x, Boom) for x in seen) == 1
    logged = [r for r in ctx.caplog.records if r.name == "concurrent.futures"]
    assert len(logged) == 1 and "exception calling callback" in logged[0].getMessage(), logged
    assert logged[0].exc_info is not None and "callback got 25" in str(logged[0].exc_info[1])


def _initializer_fails(ctx: Ctx) -> None:
    # The first future fails with the error; once the executor knows it is broken, submit
    # itself raises it, as ProcessPoolExecutor's does.
    future = ctx.executor.submit(work, 3)
    with pytest.raises(BrokenExecutor) as info:
        future.result(timeout=WAIT)
    with pytest.raises(BrokenExecutor) as again:
        ctx.executor.submit(work, 4)
    for err in (info.value, again.value):
        assert isinstance(err, InitializerError)
        assert err.failures >= 3
        assert "initializer init-tag fails on purpose" in err.remote_traceback


def _wait_for_pids(executor: RobustExecutor, n: int) -> list[int]:
    wait_until(lambda: len(executor.worker_pids()) >= n, f"{n} workers to come up", timeout=WAIT)
    return executor.worker_pids()


def _idle_worker_killed(ctx: Ctx) -> None:
    squares = [i * i for i in range(20)]
    assert [f.result(timeout=WAIT) for f in [ctx.executor.submit(work, i) for i in range(20)]] == squares
    for round_ in range(4):
        pids = _wait_for_pids(ctx.executor, 1)
        os.kill(pids[round_ % len(pids)], signal.SIGKILL)
        assert [f.result(timeout=WAIT) for f in [ctx.executor.submit(work, i) for i in range(20)]] == squares


def _busy_worker_killed(ctx: Ctx) -> None:
    """CPython's test_killed_child, inverted: a worker killed from outside mid-call."""
    started = ctx.tmp_path / "started"
    release = ctx.tmp_path / "release"
    _wait_for_pids(ctx.executor, 2)
    victim = ctx.executor.submit(announce_then_wait, str(started), str(release))
    others = [ctx.executor.submit(work, i) for i in range(6)]
    wait_until(started.exists, "the call to start", timeout=WAIT)
    pid = int(started.read_text())
    os.kill(pid, signal.SIGKILL)
    err = victim.exception(timeout=WAIT)
    assert isinstance(err, WorkerLostError) and err.pid == pid, repr(err)
    _lost("running", signal.SIGKILL, task="announce_then_wait(")(err, ctx)
    assert [f.result(timeout=WAIT) for f in others] == [i * i for i in range(6)]


def _killed_with_big_payload(big: Any, expected: Callable[[Any], bool], pause: float) -> Callable[[Ctx], None]:
    """Two big calls (one per worker), one worker SIGKILLed while they are in flight."""

    def run(ctx: Ctx) -> None:
        _wait_for_pids(ctx.executor, 2)
        bigs = [ctx.executor.submit(work, big) for _ in range(2)]
        time.sleep(pause)
        victim = ctx.executor.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        smalls = [ctx.executor.submit(work, i) for i in range(6)]
        lost = 0
        for f in bigs:
            try:
                value = f.result(timeout=WAIT)
            except WorkerLostError as err:
                lost += 1
                assert err.signal is signal.SIGKILL and err.pid == victim, str(err)
            else:
                assert expected(value)
        assert lost <= 1
        assert [f.result(timeout=WAIT) for f in smalls] == [i * i for i in range(6)]

    return run


def _two_workers_killed(ctx: Ctx) -> None:
    items: list[Any] = list(range(10))
    items[3] = items[4] = ("sleep-then-sigkill", 0.1)
    got = _outcomes([ctx.executor.submit(work, x) for x in items])
    for i in (3, 4):
        _lost("running", signal.SIGKILL)(got[i], ctx)
    _assert_others_ok(items, got, {3, 4})


def _segfault_on_every_worker(ctx: Ctx) -> None:
    items: list[Any] = list(range(12))
    bad = {1, 2, 5, 8, 9}
    for i in bad:
        items[i] = ("fault", "segfault")
    got = _outcomes([ctx.executor.submit(work, x) for x in items])
    for i in bad:
        _lost("running", signal.SIGSEGV)(got[i], ctx)
    _assert_others_ok(items, got, bad)


def _supervisor_killed(ctx: Ctx) -> None:
    workers = _wait_for_pids(ctx.executor, 2)
    supervisor = psutil.Process(workers[0]).ppid()
    # A child of the owner, or of the owner's forkserver (the owner runs threads here).
    assert supervisor != ctx.owner_pid and supervisor in {p.pid for p in psutil.Process().children(recursive=True)}
    release = ctx.tmp_path / "release"
    pending = [ctx.executor.submit(work, ("wait", str(release))) for _ in range(6)]
    time.sleep(0.1)
    os.kill(supervisor, signal.SIGKILL)
    release.touch()
    for f in pending:
        try:
            assert f.result(timeout=WAIT) == "released by release"
        except WorkerLostError as err:
            assert err.signal is signal.SIGKILL, str(err)
    assert [f.result(timeout=WAIT) for f in [ctx.executor.submit(work, i) for i in range(20)]] == [i * i for i in range(20)]
    new_workers = _wait_for_pids(ctx.executor, 1)
    assert psutil.Process(new_workers[0]).ppid() != supervisor


def _sigkill_inside_map_chunk(ctx: Ctx) -> None:
    items: list[Any] = list(range(16))
    items[6] = ("fault", "sigkill")
    results = ctx.executor.map(work, items, chunksize=4, timeout=WAIT)
    assert [next(results) for _ in range(6)] == [i * i for i in range(6)]
    with pytest.raises(WorkerLostError) as info:
        next(results)
    err = info.value
    assert err.signal is signal.SIGKILL and err.task_index == 6 and "task #6" in str(err)
    with pytest.raises(StopIteration):  # an error ends a map
        next(results)


def _reply_row(bad: Any, check: Check, max_replaced: int = 2) -> Callable[[Ctx], None]:
    """Submits of ``spoil_reply``; item BAD computes its result, then spoils its trip back."""

    def run(ctx: Ctx) -> None:
        items: list[Any] = list(range(N_ITEMS))
        items[BAD] = bad
        futures = [ctx.executor.submit(spoil_reply, x) for x in items]
        deadline = time.monotonic() + REPLY_WAIT
        while not all(f.done() for f in futures):
            stats = ctx.executor.stats()
            assert stats.workers_replaced <= max_replaced, f"respawn loop: {stats.replaced}"
            assert time.monotonic() < deadline, f"hang: {sum(not f.done() for f in futures)} futures still waiting"
            time.sleep(0.02)
        got = _outcomes(futures, timeout=0)
        check(got[BAD], ctx)
        _assert_others_ok(items, got, {BAD})

    return run


def _lost_in_reply(err: BaseException, ctx: Ctx) -> None:
    assert type(err) is WorkerLostError, repr(err)
    assert err.task is not None and err.task.startswith("spoil_reply("), err.task
    assert err.pid is not None and err.pid > 0 and err.pid != ctx.owner_pid
    assert len(err.attempts) == 1


def _refused_frame(err: BaseException, ctx: Ctx) -> None:
    assert isinstance(err, TaskSerializationError), repr(err)
    assert err.phase == RESULT_WORKER


def _any_pool_error(err: BaseException, ctx: Ctx) -> None:
    assert isinstance(err, RobustPoolError), repr(err)


SINGLE_ITEM_ROWS = [
    # 1. pickling the task in the owner
    Row("task-pickle-error", _one_bad_item(_bad(Unpicklable()), _serialization(TASK_OWNER, "Boom: refuse", Boom))),
    # 2. unpickling the task in the worker
    Row("task-unpickle-error", _one_bad_item(_bad(TaskBomb("error")), _serialization(TASK_WORKER, "Boom: error"))),
    Row("task-unpickle-sysexit", _one_bad_item(_bad(TaskBomb("sys_exit")), _serialization(TASK_WORKER, "SystemExit: 4"))),
    Row("task-unpickle-os_exit", _one_bad_item(_bad(TaskBomb("os_exit")), _lost("unpickling", exitcode=3))),
    Row("task-unpickle-segfault", _one_bad_item(_bad(TaskBomb("segfault")), _lost("unpickling", signal.SIGSEGV))),
    # 3. running the function
    Row("run-error", _one_bad_item(_bad(("fault", "error")), _own_type(Boom, lambda e: "error on purpose" in str(e)))),
    Row("run-error-unpicklable", _one_bad_item(_bad(("raise-unrebuildable", "x")), _remote("UnrebuildableError"))),
    Row("run-sysexit", _one_bad_item(_bad(("fault", "sys_exit")), _own_type(SystemExit, lambda e: e.args == (4,)))),
    Row("run-os_exit", _one_bad_item(_bad(("fault", "os_exit")), _lost("running", exitcode=3))),
    Row("run-segfault", _one_bad_item(_bad(("fault", "segfault")), _lost("running", signal.SIGSEGV))),
    Row("run-sigkill", _one_bad_item(_bad(("fault", "sigkill")), _lost("running", signal.SIGKILL))),
    Row("run-sigterm", _one_bad_item(_bad(("fault", "sigterm")), _lost("running", signal.SIGTERM))),
    # 4. pickling the result in the worker
    Row("result-pickle-error", _one_bad_item(_bad(("result", "error")), _serialization(RESULT_WORKER, "Boom: error"))),
    Row("result-pickle-sysexit", _one_bad_item(_bad(("result", "sys_exit")), _serialization(RESULT_WORKER, "SystemExit: 4"))),
    Row("result-pickle-os_exit", _one_bad_item(_bad(("result", "os_exit")), _lost("pickling the result of", exitcode=3))),
    Row("result-pickle-segfault", _one_bad_item(_bad(("result", "segfault")), _lost("pickling the result of", signal.SIGSEGV))),
    # 5. unpickling the result in the owner
    Row(
        "result-unpickle-error",
        _one_bad_item(lambda ctx: ("owner", ("error", ctx.owner_pid)), _serialization(RESULT_OWNER, "Boom: refuse", Boom)),
    ),
    Row(
        "result-unpickle-exit",
        _one_bad_item(lambda ctx: ("owner", ("exit", ctx.owner_pid)), _serialization(RESULT_OWNER, "SystemExit", SystemExit)),
    ),
    # 6. the reply's trip back
    Row("reply-fds-closed", _reply_row(("close-fds", None), _lost_in_reply)),
    Row("reply-fds-devnull", _reply_row(("devnull-fds", None), _lost_in_reply)),
    Row(
        "reply-over-frame-limit",
        _reply_row(("big", 2 * 2**20), _refused_frame, max_replaced=0),
        executor_kwargs={"initializer": shrink_frames},
    ),
    Row("reply-garbage", _reply_row(("garbage", None), _any_pool_error)),
]

SCENARIO_ROWS = [
    Row("callback-raises", _callbacks_raise),
    Row(
        "initializer-fails",
        _initializer_fails,
        executor_kwargs={"initializer": failing_initializer, "initargs": ("init-tag",)},
        usable_after=False,
    ),
    Row("idle-worker-killed", _idle_worker_killed),
    Row("busy-worker-killed", _busy_worker_killed),
    Row("big-arg-in-flight-sigkill", _killed_with_big_payload(b"x" * BIG, lambda v: v == BIG, 0.0)),
    Row("big-result-in-flight-sigkill", _killed_with_big_payload(("make", BIG), lambda v: v == b"y" * BIG, 0.02)),
    Row("two-workers-sigkill", _two_workers_killed),
    Row("segfault-every-worker", _segfault_on_every_worker),
    Row("supervisor-sigkill", _supervisor_killed),
    Row("map-chunk-item-sigkill", _sigkill_inside_map_chunk),
]

MATRIX = [pytest.param(row, method, id=f"{row.id}-{method}") for row in SINGLE_ITEM_ROWS for method in ("fork", "spawn")]
MATRIX += [pytest.param(row, None, id=row.id) for row in SCENARIO_ROWS]


@pytest.mark.parametrize(("row", "start_method"), MATRIX)
def test_crash_matrix_through_submit(row: Row, start_method: str | None, caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    with RobustExecutor(2, start_method=start_method, **row.executor_kwargs) as executor:
        try:
            row.run(Ctx(executor, os.getpid(), caplog, tmp_path))
        finally:
            (tmp_path / "release").touch()  # whatever a row left waiting ends now
        if row.usable_after:
            assert executor.submit(work, 7).result(timeout=WAIT) == 49
            assert list(executor.map(work, range(10), timeout=WAIT)) == [i * i for i in range(10)]
        else:
            with pytest.raises(InitializerError):
                executor.submit(work, 7).result(timeout=WAIT)
