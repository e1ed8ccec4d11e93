"""Tasks and the jobs they belong to: pure task-state logic, testable without processes.

A *job* is one user call (``apply_async``, ``map``, ``imap``, ``submit``...) and owns the
results of its items. A *task* is what travels to a worker: one or more consecutive items of
a job (a chunk), already pickled, plus what is needed to describe each item in an error and
to split the chunk if a worker dies inside it.

Tasks are built (and pickled) in the thread that makes the call, so a pickling error is
reported on that call's items and the dispatcher thread never runs user ``__reduce__`` code
on its hot path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._calls import Mode, describe, function_name
from .._errors import SerializationPhase, TaskSerializationError
from . import _serialize as ser

_task_ids = itertools.count(1)
_func_ids = itertools.count(1)


class Job(Protocol):
    """What the dispatcher needs from a job. Called on the dispatcher thread only."""

    @property
    def cancelled(self) -> bool:
        """True when tasks not yet started must be dropped (they will never be wanted)."""
        ...

    @property
    def cancellable(self) -> bool:
        """False when every task will be wanted whatever happens (the dispatcher may then
        queue more of them on a worker ahead of time)."""
        ...

    def deliver(self, index: int, values: Sequence[Any]) -> None:
        """Consecutive items starting at ``index`` succeeded with ``values``."""
        ...

    def fail(self, index: int, exc: BaseException) -> None:
        """Item ``index`` failed with ``exc``."""
        ...

    def drop(self, index: int, count: int) -> None:
        """Items ``index .. index+count-1`` will never run (the job was cancelled)."""
        ...


@dataclass(frozen=True, slots=True)
class FuncRef:
    """A pickled callable, shared by every task of one call."""

    func_id: int
    blob: bytes
    name: str


def pickle_function(fn: Callable[..., Any]) -> FuncRef:
    """Pickle ``fn`` once for a whole call; raises TaskSerializationError if impossible."""
    name = function_name(fn)
    try:
        blob = ser.dumps(fn)
    except Exception as exc:
        raise TaskSerializationError.of(SerializationPhase.PICKLE_TASK, exc, detail=f"cannot pickle the function {name}: {exc}")
    return FuncRef(next(_func_ids), blob, name)


@dataclass(eq=False, slots=True)
class Task:
    """Consecutive items ``start .. start+count-1`` of ``job``, pickled for one worker."""

    job: Job
    func: FuncRef
    mode: Mode
    start: int
    items: Sequence[Any]  # a list, or a slice of the caller's tuple or range
    payload: bytes
    timeout: float = 0.0
    indexed: bool = True  # False for apply/submit: their errors name no position
    # Reply item by item (items the pool batched, or a chunk whose job cleans unwanted
    # results: finished items must come back even if a later one never ends).
    stream: bool = False
    item_deadline: bool = False  # each item gets the whole timeout (items the pool batched)
    task_id: int = field(default_factory=lambda: next(_task_ids))
    attempts: list[tuple[int, int | None]] = field(default_factory=list)
    received: int = 0  # items whose outcome arrived (a stream task's arrive one by one)

    @property
    def count(self) -> int:
        return len(self.items)

    def describe(self, k: int) -> str:
        return describe(self.func.name, self.mode, self.items[k])

    def index(self, k: int) -> int | None:
        return self.start + k if self.indexed else None

    def split(self, keep: Sequence[int]) -> list[Task]:
        """New single-item tasks for the items ``keep`` (indices within this task)."""
        out: list[Task] = []
        for k in keep:
            for t in make_tasks(self.job, self.func, self.mode, self.start + k, [self.items[k]], self.timeout, self.indexed):
                t.attempts = list(self.attempts)
                out.append(t)
        return out

    def sub(self, begin: int, end: int) -> list[Task]:
        """New tasks for items ``begin .. end-1`` (indices within this task), as one chunk."""
        if begin >= end:
            return []
        items = self.items[begin:end]
        return make_tasks(
            self.job, self.func, self.mode, self.start + begin, items, self.timeout, self.indexed, self.stream, self.item_deadline
        )

    def rest(self) -> list[Task]:
        """The items whose outcome has not arrived, as tasks to run again."""
        return [self] if not self.received else self.sub(self.received, self.count)


def make_tasks(
    job: Job,
    func: FuncRef,
    mode: Mode,
    start: int,
    items: Sequence[Any],
    timeout: float = 0.0,
    indexed: bool = True,
    stream: bool = False,
    item_deadline: bool = False,
) -> list[Task]:
    """Pickle ``items`` into one task; items that cannot be pickled fail on the job at once.

    Normally returns one task. When some items cannot be pickled, those fail with
    TaskSerializationError and the others are returned as one task per run of good items.
    """
    try:
        return [Task(job, func, mode, start, items, ser.dumps(items), timeout, indexed, stream, item_deadline)]
    except Exception:
        pass
    tasks: list[Task] = []
    run: list[Any] = []
    run_start = start
    for k, item in enumerate(items):
        try:
            ser.dumps(item)
        except Exception as exc:
            desc = describe(func.name, mode, item)
            err = TaskSerializationError.of(SerializationPhase.PICKLE_TASK, exc, start + k if indexed else None, desc)
            ser.detach_traceback(exc, "Traceback of the pickling error, in the owner")
            if run:
                tasks.append(Task(job, func, mode, run_start, run, ser.dumps(run), timeout, indexed, stream, item_deadline))
                run = []
            job.fail(start + k, err)
            run_start = start + k + 1
        else:
            run.append(item)
    if run:
        tasks.append(Task(job, func, mode, run_start, run, ser.dumps(run), timeout, indexed, stream, item_deadline))
    return tasks
