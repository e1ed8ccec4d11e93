"""Attribution of a worker's death, as tables and without a process: ``read_slot`` (what the
dead worker's progress slot says), ``owes_items`` (a live stream task's unsent results) and
``settle`` (what becomes of the task the worker died in).

Slots are plain lists of 8 ints indexed by the ``SLOT_*`` constants, as the worker writes
them; tasks are built by ``make_tasks`` from a Chunk of a stub job.
"""

from __future__ import annotations

import array
import errno
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from robustpool._calls import Mode
from robustpool._engine import Chunk, FuncRef
from robustpool._errors import TaskTimeoutError, WorkerLostError
from robustpool._process._attribution import Outcome, SlotReading, owes_items, read_slot, settle
from robustpool._process._control import TIMEOUT, WorkerExited
from robustpool._process._supervisor import still_on
from robustpool._process._tasks import Task, make_tasks
from robustpool._process._wire import (
    SLOT_DEADLINE,
    SLOT_ERRNO,
    SLOT_FAULT,
    SLOT_ITEM,
    SLOT_PHASE,
    SLOT_SIZE,
    SLOT_STARTED,
    SLOT_TASK,
    Fault,
    Phase,
)

PID = 4242
EXITCODE = -9
START = 10  # the first task's position in its call
FIRST_ITEM = 100  # items are FIRST_ITEM, FIRST_ITEM+1, ...: distinct from positions


class JobStub:
    """A Job that records failures (make_tasks fails unpicklable items on it)."""

    cancellable = False

    def __init__(self) -> None:
        self.failed: list[tuple[int, BaseException]] = []

    def claim(self) -> bool:
        return True

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        pass

    def fail(self, index: int, exc: BaseException) -> None:
        self.failed.append((index, exc))

    def drop(self, index: int, count: int) -> None:
        pass

    def flush(self) -> None:
        pass


def work(x: int) -> int:
    return x


def make_task(
    count: int,
    *,
    stream: bool = False,
    received: int = 0,
    attempts: Sequence[tuple[int, int | None]] = (),
    indexed: bool = True,
    timeout: float = 1.5,
) -> Task:
    func = FuncRef(FuncRef.new_id(), "work", work)
    items = list(range(FIRST_ITEM, FIRST_ITEM + count))
    chunk = Chunk(JobStub(), func, Mode.MAP, START, items, timeout, indexed, stream, stream)
    [t] = make_tasks(chunk, blob=b"")
    t.received = received
    t.attempts = tuple(attempts)
    return t


def slot(task_id: int = 0, phase: int = Phase.IDLE, item: int = 0, started: int = 0, fault: int = 0, err: int = 0) -> list[int]:
    view = [0] * (SLOT_SIZE // 8)
    view[SLOT_TASK], view[SLOT_PHASE], view[SLOT_ITEM], view[SLOT_STARTED] = task_id, phase, item, started
    view[SLOT_DEADLINE] = started + 10**9 if started else 0
    view[SLOT_FAULT], view[SLOT_ERRNO] = fault, err
    return view


# -- read_slot --

UNKNOWN = 987_654_321  # a task id no task has


@dataclass(frozen=True)
class SlotCase:
    name: str
    task: str  # "t1" / "t2" (the tasks' ids), or a number as text
    phase: int
    item: int
    inflight: tuple[str, ...]  # t1 has 3 items, t2 has 2
    expect_task: str
    expect_phase: Phase
    expect_item: int
    garbage: bool = False


SLOT_CASES = [
    SlotCase("idle, never ran a task", "0", Phase.IDLE, 0, ("t1",), "0", Phase.IDLE, 0),
    SlotCase("idle, its last result arrived", "t1", Phase.IDLE, 2, ("t2",), "t1", Phase.IDLE, 2),
    SlotCase("idle, nothing in flight", "t1", Phase.IDLE, 2, (), "t1", Phase.IDLE, 2),
    SlotCase("idle, its last task in flight: replying", "t1", Phase.IDLE, 2, ("t1", "t2"), "t1", Phase.REPLYING, 2),
    SlotCase("replying, its result arrived: idle", "t1", Phase.REPLYING, 2, ("t2",), "t1", Phase.IDLE, 2),
    SlotCase("replying, its result did not arrive", "t1", Phase.REPLYING, 1, ("t1",), "t1", Phase.REPLYING, 1),
    SlotCase("init", "0", Phase.INIT, 0, ("t1",), "0", Phase.INIT, 0),
    SlotCase("init reads as init whatever else", str(UNKNOWN), Phase.INIT, -3, ("t1",), str(UNKNOWN), Phase.INIT, -3),
    SlotCase("loading", "t1", Phase.LOADING, 0, ("t1", "t2"), "t1", Phase.LOADING, 0),
    SlotCase("running an item", "t1", Phase.RUNNING, 2, ("t1", "t2"), "t1", Phase.RUNNING, 2),
    SlotCase("running the second task", "t2", Phase.RUNNING, 1, ("t1", "t2"), "t2", Phase.RUNNING, 1),
    SlotCase("dumping", "t1", Phase.DUMPING, 1, ("t1",), "t1", Phase.DUMPING, 1),
    SlotCase("an unknown phase", "t1", 99, 1, ("t1", "t2"), "t1", Phase.LOADING, 0, True),
    SlotCase("a negative phase", "t2", -1, 0, ("t1", "t2"), "t1", Phase.LOADING, 0, True),
    SlotCase("an unknown task id", str(UNKNOWN), Phase.RUNNING, 0, ("t2", "t1"), "t2", Phase.LOADING, 0, True),
    SlotCase("an item past the task", "t2", Phase.RUNNING, 2, ("t1", "t2"), "t1", Phase.LOADING, 0, True),
    SlotCase("a negative item", "t1", Phase.DUMPING, -1, ("t1",), "t1", Phase.LOADING, 0, True),
    SlotCase("idle in flight, an item past the task", "t1", Phase.IDLE, 3, ("t1",), "t1", Phase.LOADING, 0, True),
    SlotCase("garbage with nothing in flight", str(UNKNOWN), Phase.RUNNING, 5, (), "0", Phase.IDLE, 0),
]


@pytest.mark.parametrize("case", SLOT_CASES, ids=[c.name for c in SLOT_CASES])
def test_read_slot(case: SlotCase, caplog: pytest.LogCaptureFixture) -> None:
    tasks = {"t1": make_task(3), "t2": make_task(2)}

    def task_id(name: str) -> int:
        return tasks[name].task_id if name in tasks else int(name)

    started = time.monotonic_ns() - 5 * 10**9
    view = slot(task_id(case.task), case.phase, case.item, started)
    before = time.monotonic_ns()
    with caplog.at_level(logging.ERROR, logger="robustpool"):
        reading = read_slot(view, [tasks[n] for n in case.inflight], pid=PID)
    assert (reading.task_id, reading.phase, reading.item) == (task_id(case.expect_task), case.expect_phase, case.expect_item)
    assert reading.busy == (case.expect_phase in (Phase.LOADING, Phase.RUNNING, Phase.DUMPING, Phase.REPLYING))
    assert (reading.fault, reading.errno) == (Fault.NONE, 0)
    logged = [r.getMessage() for r in caplog.records if r.name == "robustpool"]
    if case.garbage:
        assert before <= reading.started <= time.monotonic_ns()  # the blame starts now
        assert logged == [f"robustpool: worker {PID} left an unreadable progress slot; blaming its oldest task"]
    else:
        assert reading.started == started
        assert logged == []


@pytest.mark.parametrize(
    ("fault", "err", "expected"),
    [
        (Fault.NONE, 0, None),
        (Fault.NONE, errno.EPIPE, None),
        (Fault.SEND, errno.EPIPE, f"it could not send to the owner ({os.strerror(errno.EPIPE)}): did the task close"),
        (Fault.SEND, 0, "it could not send to the owner: did the task close or replace file descriptors"),
        (Fault.RECEIVE, errno.ECONNRESET, f"it could not read from the owner ({os.strerror(errno.ECONNRESET)}):"),
        (Fault.PROTOCOL, 0, "it received bytes that are not robustpool frames"),
        (Fault.LOOP, 0, "robustpool's worker loop failed; its traceback is on the worker's stderr"),
        (42, 0, "robustpool's worker loop failed"),  # an unknown fault code reads as a loop failure
        (-1, 0, "robustpool's worker loop failed"),
    ],
)
def test_fault_codes_in_words(fault: int, err: int, expected: str | None) -> None:
    t = make_task(1)
    reading = read_slot(slot(t.task_id, Phase.RUNNING, 0, 1, fault, err), [t])
    assert reading.fault == (fault if fault in (0, 1, 2, 3, 4) else Fault.LOOP)
    assert reading.errno == err
    reason = reading.fault_reason()
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected), reason


def test_a_fault_is_kept_even_when_the_slot_is_garbage() -> None:
    t = make_task(2)
    reading = read_slot(slot(UNKNOWN, 77, 0, 1, Fault.SEND, errno.EBADF), [t])
    assert (reading.task_id, reading.fault, reading.errno) == (t.task_id, Fault.SEND, errno.EBADF)


# -- owes_items --


@pytest.mark.parametrize(
    ("phase", "item", "received", "stream", "same_task", "owes"),
    [
        (Phase.RUNNING, 3, 2, True, True, True),  # item 2 finished, its result is on its way
        (Phase.RUNNING, 2, 2, True, True, False),
        (Phase.RUNNING, 0, 0, True, True, False),
        (Phase.DUMPING, 3, 2, True, True, True),
        (Phase.DUMPING, 2, 2, True, True, False),
        (Phase.REPLYING, 4, 4, True, True, True),  # all 5 done, 4 arrived
        (Phase.REPLYING, 4, 5, True, True, False),
        (Phase.LOADING, 0, 0, True, True, False),
        (Phase.IDLE, 4, 0, True, True, False),
        (Phase.RUNNING, 3, 0, False, True, False),  # not a stream task: one result at the end
        (Phase.REPLYING, 4, 0, False, True, False),
        (Phase.RUNNING, 3, 0, True, False, False),  # another task in the slot
    ],
)
def test_owes_items(phase: Phase, item: int, received: int, stream: bool, same_task: bool, owes: bool) -> None:
    t = make_task(5, stream=stream, received=received)
    other = make_task(5, stream=True)
    view = slot(t.task_id if same_task else UNKNOWN, phase, item)
    assert owes_items(view, [other, t]) is owes
    assert owes_items(view, []) is False


# -- settle --


@dataclass(frozen=True)
class SettleCase:
    name: str
    phase: Phase
    item: int
    count: int
    expect: Outcome
    again: list[tuple[int, int, int]]  # (start within the task, items, attempts carried)
    k: int = 0  # the culprit item (within the task)
    received: int = 0
    stream: bool = False
    retries: int = 0
    stopping: bool = False
    timeout: str = ""  # "self": the supervisor killed it for this task's deadline; "other": another task's
    prior: tuple[tuple[int, int | None], ...] = ()  # attempts before this death
    words: str = "running"
    indexed: bool = True
    split: bool = field(default=False)  # the again tasks are single items, not streams


P1 = ((111, -11),)
P2 = ((111, -11), (222, -6))

SETTLE_CASES = [
    # A death while RUNNING item k of a chunk: items before k finished but their results
    # died with the worker, so they run again without an attempt; k is retried or fails.
    SettleCase("running item k, retried", Phase.RUNNING, 2, 5, Outcome.RETRY, [(2, 1, 1), (0, 2, 0), (3, 2, 0)], 2, retries=1),
    SettleCase("running item k, lost", Phase.RUNNING, 2, 5, Outcome.LOST, [(0, 2, 0), (3, 2, 0)], 2),
    SettleCase("running the first item", Phase.RUNNING, 0, 3, Outcome.LOST, [(1, 2, 0)], 0),
    SettleCase("running the last item, retried", Phase.RUNNING, 2, 3, Outcome.RETRY, [(2, 1, 1), (0, 2, 0)], 2, retries=1),
    SettleCase("running a single item", Phase.RUNNING, 0, 1, Outcome.LOST, [], 0),
    SettleCase("a slot item past the task is clamped", Phase.RUNNING, 9, 3, Outcome.LOST, [(0, 2, 0)], 2),
    SettleCase("a negative slot item is clamped", Phase.RUNNING, -4, 3, Outcome.LOST, [(1, 2, 0)], 0),
    SettleCase(
        "stream: running past received items",
        Phase.RUNNING,
        3,
        5,
        Outcome.LOST,
        [(2, 1, 0), (4, 1, 0)],
        3,
        received=2,
        stream=True,
    ),
    SettleCase(
        "stream: dumping is per item",
        Phase.DUMPING,
        1,
        3,
        Outcome.RETRY,
        [(1, 1, 1), (0, 1, 0), (2, 1, 0)],
        1,
        stream=True,
        retries=1,
    ),
    # A stream task between items: item k's outcome had arrived, the death is not its doing.
    SettleCase("stream: between items", Phase.RUNNING, 1, 5, Outcome.INNOCENT, [(2, 3, 0)], received=2, stream=True),
    SettleCase(
        "stream: between items, even stopping or at its deadline",
        Phase.RUNNING,
        0,
        4,
        Outcome.INNOCENT,
        [(1, 3, 0)],
        received=1,
        stream=True,
        stopping=True,
        timeout="self",
    ),
    # A death during the whole of a multi-item task cannot be pinned on one item: isolate.
    SettleCase("multi-item loading", Phase.LOADING, 0, 3, Outcome.ISOLATE, [(0, 1, 1), (1, 1, 1), (2, 1, 1)], split=True),
    SettleCase("multi-item dumping", Phase.DUMPING, 2, 3, Outcome.ISOLATE, [(0, 1, 1), (1, 1, 1), (2, 1, 1)], split=True),
    SettleCase("multi-item replying", Phase.REPLYING, 2, 3, Outcome.ISOLATE, [(0, 1, 1), (1, 1, 1), (2, 1, 1)], split=True),
    SettleCase(
        "stream replying, 2 of 5 received",
        Phase.REPLYING,
        4,
        5,
        Outcome.ISOLATE,
        [(2, 1, 1), (3, 1, 1), (4, 1, 1)],
        received=2,
        stream=True,
        split=True,
    ),
    SettleCase(
        "multi-item loading, stopping: isolated all the same",
        Phase.LOADING,
        0,
        2,
        Outcome.ISOLATE,
        [(0, 1, 1), (1, 1, 1)],
        stopping=True,
        split=True,
    ),
    SettleCase(
        "multi-item loading, its deadline: isolated",
        Phase.LOADING,
        0,
        2,
        Outcome.ISOLATE,
        [(0, 1, 1), (1, 1, 1)],
        timeout="self",
        split=True,
    ),
    SettleCase(
        "isolation carries earlier attempts", Phase.DUMPING, 0, 2, Outcome.ISOLATE, [(0, 1, 2), (1, 1, 2)], prior=P1, split=True
    ),
    # One item left: it is the culprit, whatever the phase.
    SettleCase("single item loading, retried", Phase.LOADING, 0, 1, Outcome.RETRY, [(0, 1, 1)], retries=1),
    SettleCase("single item loading, lost", Phase.LOADING, 0, 1, Outcome.LOST, [], words="unpickling"),
    SettleCase("single item dumping, lost", Phase.DUMPING, 0, 1, Outcome.LOST, [], words="pickling the result of"),
    SettleCase("single item replying, lost", Phase.REPLYING, 0, 1, Outcome.LOST, [], words="sending the result of"),
    SettleCase(
        "stream replying its last item",
        Phase.REPLYING,
        2,
        3,
        Outcome.LOST,
        [],
        2,
        received=2,
        stream=True,
        words="sending the result of",
    ),
    # Retries: every death is an attempt; the culprit runs again while retries allow.
    SettleCase("retries left after an earlier death", Phase.RUNNING, 0, 1, Outcome.RETRY, [(0, 1, 2)], retries=2, prior=P1),
    SettleCase("retries exhausted", Phase.RUNNING, 0, 1, Outcome.LOST, [], retries=1, prior=P1),
    SettleCase("retries exhausted after two", Phase.RUNNING, 1, 2, Outcome.LOST, [(0, 1, 0)], 1, retries=2, prior=P2),
    SettleCase(
        "stopping: lost, not retried", Phase.RUNNING, 1, 3, Outcome.LOST, [(0, 1, 0), (2, 1, 0)], 1, retries=5, stopping=True
    ),
    # Killed for its deadline: a timeout, never retried.
    SettleCase("timeout", Phase.RUNNING, 1, 3, Outcome.TIMED_OUT, [(0, 1, 0), (2, 1, 0)], 1, timeout="self"),
    SettleCase("timeout with retries left", Phase.RUNNING, 0, 1, Outcome.TIMED_OUT, [], retries=3, timeout="self"),
    SettleCase("timeout of a single item loading", Phase.LOADING, 0, 1, Outcome.TIMED_OUT, [], timeout="self"),
    SettleCase("timeout of an unindexed task", Phase.RUNNING, 0, 1, Outcome.TIMED_OUT, [], timeout="self", indexed=False),
    SettleCase("another task's timeout: retried", Phase.RUNNING, 0, 1, Outcome.RETRY, [(0, 1, 1)], retries=1, timeout="other"),
    SettleCase("another task's timeout: lost", Phase.RUNNING, 0, 1, Outcome.LOST, [], timeout="other"),
    SettleCase("lost, unindexed", Phase.RUNNING, 0, 1, Outcome.LOST, [], indexed=False),
]


@pytest.mark.parametrize("case", SETTLE_CASES, ids=[c.name for c in SETTLE_CASES])
def test_settle(case: SettleCase) -> None:
    t = make_task(case.count, stream=case.stream, received=case.received, attempts=case.prior, indexed=case.indexed)
    task_id = t.task_id if case.timeout != "other" else UNKNOWN
    death = WorkerExited(1, PID, EXITCODE, TIMEOUT if case.timeout else None, task_id if case.timeout else None, 123 << 20)
    started = time.monotonic_ns() - 2 * 10**9
    reading = SlotReading(t.task_id, case.phase, case.item, started)
    reason = "a reason" if not case.timeout else None

    verdict = settle(t, death, reading, reason, case.retries, case.stopping)

    assert verdict.outcome is case.expect
    assert verdict.item == case.k
    again = [(nt.start - START, nt.count, len(nt.attempts)) for nt in verdict.again]
    assert again == case.again
    for nt in verdict.again:
        assert nt.job is t.job and nt.func is t.func and nt.blob == t.blob and nt.mode == t.mode
        assert list(nt.items) == list(t.items[nt.start - START : nt.start - START + nt.count])
        assert nt.stream == (t.stream and not case.split)
        assert nt.timeout == t.timeout and nt.indexed == t.indexed
        assert nt is t or nt.task_id != t.task_id
        assert nt.received == 0
        if nt.attempts:  # a retried or isolated item carries every attempt, this one last
            assert nt.attempts == (*case.prior, (PID, EXITCODE))
    this = (*case.prior, (PID, EXITCODE))
    assert t.attempts == (tuple(case.prior) if case.expect is Outcome.INNOCENT else this)

    culprit = START + case.k if case.indexed else None
    described = f"work({FIRST_ITEM + case.k})"
    if case.expect is Outcome.LOST:
        err = verdict.error
        assert isinstance(err, WorkerLostError)
        assert (err.pid, err.exitcode, err.task_index, err.task, err.phase) == (PID, EXITCODE, culprit, described, case.words)
        assert err.attempts == tuple(this) and err.last_rss == 123 << 20
        assert err.reason == reason
        label = f"task #{culprit} {described}" if case.indexed else f"a task {described}"
        assert f"worker {PID} died from SIGKILL (-9) while {case.words} {label}" in str(err)
        if len(this) > 1:
            assert f"it killed {len(this)} workers" in str(err)
    elif case.expect is Outcome.TIMED_OUT:
        err = verdict.error
        assert isinstance(err, TaskTimeoutError)
        assert (err.timeout, err.task_index, err.task, err.pid) == (1.5, culprit, described, PID)
        assert 1.9 <= err.elapsed < 10.0
    else:
        assert verdict.error is None


def test_the_isolated_items_each_run_alone_then_only_the_guilty_one_fails() -> None:
    """Isolation costs the guilty item one run more than ``retries``: with retries=0 it kills
    two workers (the chunk's and its own) before it fails."""
    chunk = make_task(3)
    death = WorkerExited(1, PID, EXITCODE)
    verdict = settle(chunk, death, SlotReading(chunk.task_id, Phase.LOADING, 0, 0), None, 0, False)
    assert verdict.outcome is Outcome.ISOLATE
    innocent, guilty, other = verdict.again
    second = WorkerExited(2, PID + 1, -11)
    final = settle(guilty, second, SlotReading(guilty.task_id, Phase.LOADING, 0, 0), None, 0, False)
    assert final.outcome is Outcome.LOST and final.again == []
    assert isinstance(final.error, WorkerLostError)
    assert final.error.attempts == ((PID, EXITCODE), (PID + 1, -11))
    assert final.error.task_index == START + 1 and final.error.phase == "unpickling"
    assert innocent.count == other.count == 1 and innocent.start == START and other.start == START + 2


def test_make_tasks_fails_unpicklable_items_on_the_job_and_keeps_the_rest() -> None:
    """The Task objects of these tables come from make_tasks; its split around a bad item."""
    job = JobStub()
    func = FuncRef(FuncRef.new_id(), "work", work)
    tasks = make_tasks(Chunk(job, func, Mode.MAP, 5, [1, 2, threading.Lock(), 4]), blob=b"")
    assert [(t.start, list(t.items)) for t in tasks] == [(5, [1, 2]), (8, [4])]
    assert [index for index, _ in job.failed] == [7]
    assert "work(" in str(job.failed[0][1])


# -- still_on: a kill aimed at one task (a cancelled job's) --

AIMED = 7
BEHIND = (3, 12)  # the tasks queued behind it on that worker (ids do not say the order)


@pytest.mark.parametrize(
    ("task_id", "phase", "kill"),
    [
        (AIMED, Phase.LOADING, True),
        (AIMED, Phase.RUNNING, True),
        (AIMED, Phase.DUMPING, True),
        # Its result is being sent: the owner receives it (and cleans it) if we wait.
        (AIMED, Phase.REPLYING, False),
        # The owner had not read the result yet when it asked; the worker is idle now...
        (AIMED, Phase.IDLE, False),
        # ... or already runs a task queued behind it, someone else's, which must not die for it
        # (task 3 was queued after task 7: a task run again after a death gets a new id).
        (3, Phase.LOADING, False),
        (12, Phase.RUNNING, False),
        (12, Phase.DUMPING, False),
        # The worker has not reached it yet: still in its initializer, or done with the task
        # before it (whose result the owner has): the kill stops it before it starts.
        (0, Phase.INIT, True),
        (0, Phase.IDLE, True),
        (5, Phase.REPLYING, True),
        (20, Phase.IDLE, True),
    ],
)
def test_a_kill_aimed_at_a_task_lands_until_the_worker_is_past_it(task_id: int, phase: Phase, kill: bool) -> None:
    assert still_on(memoryview_of(slot(task_id, phase)), AIMED, BEHIND) is kill
    # An unaimed kill (task 0: the pool is broken, a protocol error) lands whatever the slot says.
    assert still_on(memoryview_of(slot(task_id, phase)), 0) is True


def memoryview_of(view: list[int]) -> memoryview:
    """The slot as the supervisor maps it: a memoryview of int64s."""
    return memoryview(array.array("q", view))
