"""The crash matrix: every phase of a task's trip crossed with every way it can fail.

Each row of ``MATRIX`` runs on a fresh 2-process pool, under both start methods, with real
processes and real signals. A row expects the failing item to get one error of the right
type and content, every other item to be delivered, and the pool to still run a follow-up
``apply`` (the conftest fixture then checks that no process is left behind). Every wait is
bounded, so a hang fails the test instead of stalling the suite.

The phases, in the order a task meets them:

* ``task-pickle``     pickling the task's argument in the owner;
* ``task-unpickle``   unpickling the argument in the worker (the rebuild callable misbehaves);
* ``run``             running the function;
* ``result-pickle``   pickling the result in the worker (the result's ``__reduce__``);
* ``result-unpickle`` unpickling the result in the owner;

followed by whole-pool scenarios: callbacks, the initializer, workers and the supervisor
killed from outside, big payloads in flight, a crash inside a chunk.

Everything a worker runs is defined at module level, so spawn-mode workers can import it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from robustpool import (
    IMapIterator,
    InitializerError,
    RobustPool,
    RobustPoolError,
    TaskSerializationError,
    WorkerLostError,
)

START_METHODS = ["fork", "forkserver", "spawn"]
BAD = 3  # position of the failing item in the single-item rows
N_ITEMS = 8
BIG = 8 * 2**20  # bytes: far more than a socket buffer holds
WAIT = 30.0  # seconds: every wait in this file is bounded by this

# --- what runs in the workers (module level, so spawn-mode workers can import it) ---------


class Boom(Exception):
    """The plain, picklable exception the rows raise on purpose."""


def _fault(mode: str) -> None:
    """Misbehave in one of the ways the matrix covers."""
    if mode == "segfault":
        faulthandler._sigsegv()  # type: ignore[attr-defined]
    elif mode == "os_exit":
        os._exit(3)
    elif mode == "sys_exit":
        sys.exit(4)
    elif mode == "error":
        raise Boom(f"{mode} on purpose in pid {os.getpid()}")
    elif mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover - the signal is fatal
    else:  # pragma: no cover - a typo in a row
        raise AssertionError(f"unknown fault {mode!r}")


def _rebuild_faulty(mode: str) -> int:
    """The rebuild callable of a task argument: misbehaves while the worker unpickles."""
    _fault(mode)
    return -1  # pragma: no cover - only reached if the fault did not fire


class TaskBomb:
    """A task argument that pickles fine in the owner but misbehaves when unpickled."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_faulty, (self.mode,))


def _rebuild_big_faulty(data: bytes, mode: str) -> int:
    """The rebuild callable of a BigTaskBomb: its big bytes were read first (from the
    worker's arena, where the owner wrote them)."""
    assert len(data) == BIG
    _fault(mode)
    return -1  # pragma: no cover - only reached if the fault did not fire


class BigTaskBomb:
    """A big task argument that misbehaves once the worker has read its bytes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_big_faulty, (b"b" * BIG, self.mode))


def _die_writing_big_results() -> None:
    """Initializer: the worker SIGKILLs itself halfway through writing a big result into
    its arena (a real kill at the one moment a test cannot time from outside)."""
    import robustpool._process._arena as arena

    write = arena._write

    def dying_write(view: memoryview, offset: int, payload: Any) -> None:
        if len(payload) >= BIG:
            view[offset : offset + BIG // 2] = b"\xdd" * (BIG // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        write(view, offset, payload)

    arena._write = dying_write


class Unpicklable:
    """A task argument whose ``__reduce__`` raises in the owner."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise Boom("refuse to be pickled in the owner")


class ResultBomb:
    """A result whose ``__reduce__`` misbehaves while the worker pickles it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __reduce__(self) -> tuple[Any, ...]:
        _fault(self.mode)
        return (str, ("never",))  # pragma: no cover - only reached if the fault did not fire


def _rebuild_in_owner(mode: str, owner_pid: int) -> str:
    """Rebuild callable of an OwnerBomb: misbehaves only in the owner's process.

    The owner's pid is passed in (captured by the test), not read from a module global:
    under fork every worker inherits the owner's globals.
    """
    if os.getpid() == owner_pid:
        if mode == "error":
            raise Boom("refuse to be unpickled in the owner")
        raise SystemExit(5)
    return "rebuilt outside the owner"


class OwnerBomb:
    """A result that pickles fine in the worker but misbehaves when the owner unpickles it."""

    def __init__(self, mode: str, owner_pid: int) -> None:
        self.mode = mode
        self.owner_pid = owner_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_in_owner, (self.mode, self.owner_pid))


def _work(x: Any) -> Any:
    """The one task function. An int is squared; bytes give their length; an
    ``(action, argument)`` pair does something nasty."""
    if isinstance(x, int):
        return x * x
    if isinstance(x, bytes):
        return len(x)
    action, arg = x
    if action == "fault":
        _fault(arg)
    elif action == "signal":
        os.kill(os.getpid(), arg)
        time.sleep(10)  # pragma: no cover - the signal is fatal
        return "survived a signal"  # pragma: no cover
    elif action == "sleep-then-sigkill":
        time.sleep(arg)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover
    elif action == "sleep":
        time.sleep(arg)
        return f"slept {arg}"
    elif action == "make":
        return b"y" * arg
    elif action == "hold":  # (seconds, value): an echo that takes a while
        time.sleep(arg[0])
        return arg[1]
    elif action == "result":
        return ResultBomb(arg)
    elif action == "owner":
        mode, owner_pid = arg
        return OwnerBomb(mode, owner_pid)
    raise AssertionError(f"unknown action {action!r}")  # pragma: no cover


def _failing_initializer(tag: str) -> None:
    raise Boom(f"initializer {tag} fails on purpose")


# --- the owner's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    pool: RobustPool
    start_method: str
    owner_pid: int
    caplog: pytest.LogCaptureFixture


Check = Callable[[BaseException, Ctx], None]


@dataclass(frozen=True)
class Row:
    id: str
    run: Callable[[Ctx], None]
    pool_kwargs: dict[str, Any] = field(default_factory=dict)
    usable_after: bool = True  # False only where the pool is broken by design


def _collect(it: IMapIterator[Any], n: int) -> list[Any]:
    """Exactly ``n`` outcomes from ``it`` (a value or the item's exception), then its end."""
    got: list[Any] = []
    for _ in range(n):
        try:
            got.append(it.next(timeout=WAIT))
        except (multiprocessing.TimeoutError, StopIteration):
            raise
        except BaseException as exc:  # SystemExit from a task is that item's outcome too
            got.append(exc)
    with pytest.raises(StopIteration):
        it.next(timeout=WAIT)
    return got


def _assert_others_ok(items: list[Any], got: list[Any], failing: set[int]) -> None:
    for i, (item, outcome) in enumerate(zip(items, got, strict=True)):
        if i not in failing:
            assert outcome == item * item, f"item {i}: {outcome!r}"


def _one_bad_item(make_bad: Callable[[Ctx], Any], check: Check) -> Callable[[Ctx], None]:
    """A row: imap over ``N_ITEMS`` items where item ``BAD`` is ``make_bad(ctx)``."""

    def run(ctx: Ctx) -> None:
        items: list[Any] = list(range(N_ITEMS))
        items[BAD] = make_bad(ctx)
        got = _collect(ctx.pool.imap(_work, items), N_ITEMS)
        err = got[BAD]
        assert isinstance(err, BaseException), f"item {BAD} should have failed, got {err!r}"
        check(err, ctx)
        _assert_others_ok(items, got, {BAD})

    return run


def _lost(phase: str, sig: signal.Signals | None = None, exitcode: int | None = None, index: int = BAD) -> Check:
    """Expect a WorkerLostError for item ``index`` naming the signal or exit code."""

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
        assert err.task_index == index
        assert err.task is not None and err.task.startswith("_work(")
        assert err.phase == phase
        assert f"while {phase} task #{index} " in str(err)
        assert err.pid is not None and err.pid > 0 and err.pid not in (ctx.owner_pid, ctx.pool.supervisor_pid)
        assert err.attempts == ((err.pid, err.exitcode),)

    return check


def _serialization(phase: str, detail: str, cause: type[BaseException] | None = None) -> Check:
    """Expect a TaskSerializationError for item ``BAD`` in ``phase`` mentioning ``detail``."""

    def check(err: BaseException, ctx: Ctx) -> None:
        assert isinstance(err, TaskSerializationError), repr(err)  # and of the original error's type
        assert err.phase == phase
        assert detail in err.detail, err.detail
        assert err.task_index == BAD
        assert f"error {phase} for task #{BAD} " in str(err)
        if cause is not None:
            assert isinstance(err.__cause__, cause), repr(err.__cause__)

    return check


def _own_type(exc_type: type[BaseException], check_value: Callable[[BaseException], bool]) -> Check:
    """Expect the task's own exception, rebuilt in the owner with its own type."""

    def check(err: BaseException, ctx: Ctx) -> None:
        assert type(err) is exc_type, repr(err)
        assert check_value(err), repr(err)

    return check


def _bad(value: Any) -> Callable[[Ctx], Any]:
    return lambda ctx: value


# -- whole-pool scenarios --


def _callback_raises(ctx: Ctx) -> None:
    seen: list[Any] = []

    def bad_callback(value: object) -> None:
        raise Boom(f"callback got {value!r}")

    def bad_error_callback(exc: BaseException) -> None:
        raise Boom(f"error_callback got {exc!r}")

    with ctx.caplog.at_level(logging.ERROR, logger="robustpool"):
        first = ctx.pool.apply_async(_work, (5,), callback=bad_callback)
        failing = ctx.pool.apply_async(_work, (("fault", "error"),), error_callback=bad_error_callback)
        others = [ctx.pool.apply_async(_work, (i,), callback=seen.append) for i in range(6)]
        assert first.get(timeout=WAIT) == 25
        with pytest.raises(Boom, match="error on purpose"):
            failing.get(timeout=WAIT)
        assert [r.get(timeout=WAIT) for r in others] == [i * i for i in range(6)]
        mapped = ctx.pool.map_async(_work, range(10), callback=bad_callback)
        assert mapped.get(timeout=WAIT) == [i * i for i in range(10)]
    assert sorted(seen) == [i * i for i in range(6)]
    logged = [r.getMessage() for r in ctx.caplog.records if r.name == "robustpool"]
    assert sum("the callback raised" in m for m in logged) == 2, logged
    assert sum("the error_callback raised" in m for m in logged) == 1, logged


def _initializer_fails(ctx: Ctx) -> None:
    for x in (3, 4):
        with pytest.raises(InitializerError) as info:
            ctx.pool.apply_async(_work, (x,)).get(timeout=WAIT)
        assert info.value.failures >= 3
        assert "initializer init-tag fails on purpose" in info.value.remote_traceback


def _wait_for_pids(pool: RobustPool, n: int) -> list[int]:
    deadline = time.monotonic() + WAIT
    while len(pids := pool.worker_pids()) < n:
        assert time.monotonic() < deadline, f"only {pids} of {n} workers came up"
        time.sleep(0.01)
    return pids


def _idle_worker_killed(ctx: Ctx) -> None:
    items = list(range(20))
    squares = [i * i for i in items]
    assert ctx.pool.map_async(_work, items).get(timeout=WAIT) == squares
    for round_ in range(4):
        pids = _wait_for_pids(ctx.pool, 1)
        os.kill(pids[round_ % len(pids)], signal.SIGKILL)
        assert ctx.pool.map_async(_work, items).get(timeout=WAIT) == squares


def _killed_with_big_payload(big: Any, expected: Callable[[Any], bool], pause: float) -> Callable[[Ctx], None]:
    """Two big tasks (one per worker), one worker SIGKILLed while they are in flight."""

    def run(ctx: Ctx) -> None:
        _wait_for_pids(ctx.pool, 2)
        bigs = [ctx.pool.apply_async(_work, (big,)) for _ in range(2)]
        time.sleep(pause)
        victim = ctx.pool.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        smalls = [ctx.pool.apply_async(_work, (i,)) for i in range(6)]
        lost = 0
        for r in bigs:
            try:
                value = r.get(timeout=WAIT)
            except WorkerLostError as err:
                lost += 1
                assert err.signal is signal.SIGKILL and err.pid == victim, str(err)
            else:
                assert expected(value)
        assert lost <= 1
        assert [r.get(timeout=WAIT) for r in smalls] == [i * i for i in range(6)]

    return run


def _two_workers_killed(ctx: Ctx) -> None:
    items: list[Any] = list(range(10))
    items[3] = items[4] = ("sleep-then-sigkill", 0.1)
    got = _collect(ctx.pool.imap(_work, items), 10)
    for i in (3, 4):
        _lost("running", signal.SIGKILL, index=i)(got[i], ctx)
    _assert_others_ok(items, got, {3, 4})


def _segfault_on_every_worker(ctx: Ctx) -> None:
    """Several crashes in one imap, so every worker (first ones and replacements) has one."""
    items: list[Any] = list(range(12))
    bad = {1, 2, 5, 8, 9}
    for i in bad:
        items[i] = ("fault", "segfault")
    got = _collect(ctx.pool.imap(_work, items), 12)
    for i in bad:
        _lost("running", signal.SIGSEGV, index=i)(got[i], ctx)
    _assert_others_ok(items, got, bad)


def _supervisor_killed(ctx: Ctx) -> None:
    _wait_for_pids(ctx.pool, 2)
    old = ctx.pool.supervisor_pid
    pending = [ctx.pool.apply_async(_work, (("sleep", 0.3),)) for _ in range(6)]
    time.sleep(0.1)
    os.kill(old, signal.SIGKILL)
    for r in pending:
        try:
            assert r.get(timeout=WAIT) == "slept 0.3"
        except WorkerLostError as err:
            assert err.signal is signal.SIGKILL, str(err)
    assert ctx.pool.map_async(_work, range(20)).get(timeout=WAIT) == [i * i for i in range(20)]
    assert ctx.pool.supervisor_pid != old


def _supervisor_killed_big(ctx: Ctx) -> None:
    """The supervisor SIGKILLed while big arguments sit in the arenas and big results are
    being written: its workers die with it; every call ends, and the new workers' arenas work."""
    _wait_for_pids(ctx.pool, 2)
    old = ctx.pool.supervisor_pid
    big = b"s" * BIG
    pending = [ctx.pool.apply_async(_work, (("hold", (0.05 * k, big)),)) for k in range(6)]
    time.sleep(0.1)
    os.kill(old, signal.SIGKILL)
    for r in pending:
        try:
            assert r.get(timeout=WAIT) == big
        except WorkerLostError as err:
            assert err.signal is signal.SIGKILL, str(err)
    assert ctx.pool.apply_async(_work, (("hold", (0.0, big)),)).get(timeout=WAIT) == big
    assert ctx.pool.supervisor_pid != old


def _sigkill_inside_chunk(ctx: Ctx) -> None:
    items: list[Any] = list(range(16))
    items[6] = ("signal", signal.SIGKILL)
    got = _collect(ctx.pool.imap(_work, items, chunksize=4), 16)
    _lost("running", signal.SIGKILL, index=6)(got[6], ctx)
    _assert_others_ok(items, got, {6})


def _unpickle_error_among_batched(ctx: Ctx) -> None:
    """Tiny items the pool batches into one task: the one whose argument fails to unpickle
    in the worker fails alone (the task is loaded as a whole, so its items run again apart)."""
    items: list[Any] = list(range(300))
    items[200] = TaskBomb("error")
    got = _collect(ctx.pool.imap(_work, items), 300)
    err = got[200]
    assert isinstance(err, TaskSerializationError) and err.task_index == 200, repr(err)
    assert "Boom: error" in err.detail
    _assert_others_ok(items, got, {200})


TASK_OWNER = "pickling the task in the owner"
TASK_WORKER = "unpickling the task in the worker"
RESULT_WORKER = "pickling the result in the worker"
RESULT_OWNER = "unpickling the result in the owner"

ROWS = [
    # 1. pickling the task in the owner
    Row("task-pickle-error", _one_bad_item(_bad(Unpicklable()), _serialization(TASK_OWNER, "Boom: refuse", Boom))),
    # 2. unpickling the task in the worker
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
    Row("run-segfault-many", _segfault_on_every_worker),
    Row("run-error", _one_bad_item(_bad(("fault", "error")), _own_type(Boom, lambda e: "error on purpose" in str(e)))),
    # 4. pickling the result in the worker
    Row("result-pickle-segfault", _one_bad_item(_bad(("result", "segfault")), _lost("pickling the result of", signal.SIGSEGV))),
    Row("result-pickle-os_exit", _one_bad_item(_bad(("result", "os_exit")), _lost("pickling the result of", exitcode=3))),
    Row("result-pickle-error", _one_bad_item(_bad(("result", "error")), _serialization(RESULT_WORKER, "Boom: error"))),
    Row("result-pickle-sysexit", _one_bad_item(_bad(("result", "sys_exit")), _serialization(RESULT_WORKER, "SystemExit: 4"))),
    # 5. unpickling the result in the owner
    Row(
        "result-unpickle-error",
        _one_bad_item(lambda ctx: ("owner", ("error", ctx.owner_pid)), _serialization(RESULT_OWNER, "Boom: refuse", Boom)),
    ),
    Row(
        "result-unpickle-exit",
        _one_bad_item(lambda ctx: ("owner", ("exit", ctx.owner_pid)), _serialization(RESULT_OWNER, "SystemExit", SystemExit)),
    ),
    # 6.-12. whole-pool scenarios
    Row("callback-raises", _callback_raises),
    Row(
        "initializer-fails",
        _initializer_fails,
        pool_kwargs={"initializer": _failing_initializer, "initargs": ("init-tag",)},
        usable_after=False,
    ),
    Row("idle-worker-killed", _idle_worker_killed),
    Row("big-arg-in-flight-sigkill", _killed_with_big_payload(b"x" * BIG, lambda v: v == BIG, 0.0)),
    Row(
        "big-result-in-flight-sigkill",
        _killed_with_big_payload(("make", BIG), lambda v: v == b"y" * BIG, 0.02),
    ),
    Row("two-workers-sigkill", _two_workers_killed),
    Row("supervisor-sigkill", _supervisor_killed),
    Row("supervisor-sigkill-big-payloads", _supervisor_killed_big),
    Row("big-arg-read-sigkill", _one_bad_item(_bad(BigTaskBomb("sigkill")), _lost("unpickling", signal.SIGKILL))),
    Row(
        "big-result-write-sigkill",
        _one_bad_item(_bad(("make", BIG)), _lost("sending the result of", signal.SIGKILL)),
        pool_kwargs={"initializer": _die_writing_big_results},
    ),
    Row("chunk-item-sigkill", _sigkill_inside_chunk),
    Row("batched-item-unpickle-error", _unpickle_error_among_batched),
]

# --- hardening rows: the reply's trip (begin) -----------------------------------------------
# Phase ``reply``: the result was computed, then its trip to the owner fails -- the worker
# closed or replaced its descriptors, the frame is over the limit, or the worker wrote bytes
# that are not frames. A death after the task finished is that task's attempt (it must not be
# requeued forever), and garbage on the socket ends the call instead of hanging it. Items
# go out as separate ``apply_async`` calls (one task each, so the culprit is well defined)
# and every wait fails fast: today these are respawn loops or hangs.

REPLY_WAIT = 20.0  # seconds: bound on the reply rows (their failure today is a loop or a hang)


def _shrink_frames() -> None:
    """Initializer: lower the frame limit in the worker, so 2 MiB stands for 4 GiB."""
    import robustpool._process._wire as w

    w.MAX_FRAME = 1 << 20


def _reply_fault(x: Any) -> Any:
    """An int is squared; ``(how, arg)`` computes a result and then spoils its reply."""
    if isinstance(x, int):
        return x * x
    how, arg = x
    time.sleep(0.01)  # a slow task's reply is sent at once, before the worker reads on
    if how == "close-fds":
        os.closerange(3, 65536)
    elif how == "devnull-fds":
        null = os.open(os.devnull, os.O_RDWR)
        for fd in range(3, 101):
            if fd != null:
                with contextlib.suppress(OSError):
                    os.dup2(null, fd)
    elif how == "garbage":
        for fd in range(3, 101):
            with contextlib.suppress(OSError):
                os.write(fd, b"garbage" * 100)
        time.sleep(30)
    elif how == "big":
        return b"z" * arg
    return f"spoiled by {how}"


def _reply_row(bad: Any, check: Check, max_replaced: int = 2) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        items: list[Any] = list(range(N_ITEMS))
        items[BAD] = bad
        pending = [ctx.pool.apply_async(_reply_fault, (x,)) for x in items]
        deadline = time.monotonic() + REPLY_WAIT
        while not all(r.ready() for r in pending):
            stats = ctx.pool.stats()
            assert stats.workers_replaced <= max_replaced, f"respawn loop: {stats.workers_replaced} replaced {stats.replaced}"
            assert time.monotonic() < deadline, f"hang: {sum(not r.ready() for r in pending)} calls still waiting"
            time.sleep(0.02)
        got: list[Any] = []
        for r in pending:
            try:
                got.append(r.get(timeout=0))
            except BaseException as exc:
                got.append(exc)
        check(got[BAD], ctx)
        _assert_others_ok(items, got, {BAD})

    return run


def _lost_in_reply(err: BaseException, ctx: Ctx) -> None:
    assert type(err) is WorkerLostError, repr(err)
    assert err.task is not None and err.task.startswith("_reply_fault("), err.task
    assert err.pid is not None and err.pid > 0 and err.pid not in (ctx.owner_pid, ctx.pool.supervisor_pid)
    assert len(err.attempts) == 1


def _refused_frame(err: BaseException, ctx: Ctx) -> None:
    assert isinstance(err, TaskSerializationError), repr(err)
    assert err.phase == RESULT_WORKER


def _any_pool_error(err: BaseException, ctx: Ctx) -> None:
    assert isinstance(err, RobustPoolError), repr(err)


ROWS += [
    Row("reply-fds-closed", _reply_row(("close-fds", None), _lost_in_reply)),
    Row("reply-fds-devnull", _reply_row(("devnull-fds", None), _lost_in_reply)),
    Row(
        "reply-over-frame-limit",
        _reply_row(("big", 2 * 2**20), _refused_frame, max_replaced=0),
        pool_kwargs={"initializer": _shrink_frames},
    ),
    Row("reply-garbage", _reply_row(("garbage", None), _any_pool_error)),
]
# --- hardening rows: the reply's trip (end) -------------------------------------------------

MATRIX = [pytest.param(row, id=row.id) for row in ROWS]


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("row", MATRIX)
def test_crash_matrix(row: Row, start_method: str, caplog: pytest.LogCaptureFixture) -> None:
    shm = _shm_entries()
    with RobustPool(2, start_method=start_method, **row.pool_kwargs) as pool:
        row.run(Ctx(pool, start_method, os.getpid(), caplog))
        if row.usable_after:
            assert pool.apply_async(_work, (7,)).get(timeout=WAIT) == 49
            assert pool.map_async(_work, range(10)).get(timeout=WAIT) == [i * i for i in range(10)]
        else:
            with pytest.raises(InitializerError):
                pool.apply_async(_work, (7,)).get(timeout=WAIT)
    _assert_no_shared_memory_left(shm)


# --- shared memory left behind: the owner's mappings and descriptors, /dev/shm ---------------

_MEMFD = "/memfd:robustpool"


def _shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _assert_no_shared_memory_left(before: set[str]) -> None:
    """After a pool is gone: the owner maps none of its workers' slots and arenas (each
    dead worker's were unmapped when it was reaped, or at the latest here), holds no
    descriptor of them, and /dev/shm has no new entry of ours (nothing is ever named)."""
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as f:
            mapped = [line.strip() for line in f if _MEMFD in line]
        assert not mapped, f"the owner still maps: {mapped}"
        held = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith(_MEMFD):
                    held.append(fd)
        assert not held, f"the owner still holds memfd descriptors {held}"
    new = {name for name in _shm_entries() - before if "robustpool" in name}
    assert not new, f"left in /dev/shm: {new}"


@pytest.mark.parametrize("start_method", START_METHODS)
def test_imap_sigterm_one_of_100_does_not_hang(start_method: str) -> None:
    """The hang from the issue: a worker SIGTERMs itself on one item of an imap over 100."""
    items: list[Any] = list(range(100))
    items[42] = ("signal", signal.SIGTERM)
    with RobustPool(2, start_method=start_method) as pool:
        got = _collect(pool.imap(_work, items), 100)
        errors = [(i, e) for i, e in enumerate(got) if isinstance(e, BaseException)]
        assert [i for i, _ in errors] == [42], errors
        err = errors[0][1]
        assert isinstance(err, WorkerLostError) and err.signal is signal.SIGTERM
        assert err.task_index == 42 and "SIGTERM (-15)" in str(err)
        _assert_others_ok(items, got, {42})
        assert pool.apply_async(_work, (7,)).get(timeout=WAIT) == 49
