"""Tasks: chunks of a call pickled for one worker; pure task-state logic, no processes.

A task is a :class:`~robustpool._engine.Chunk` (consecutive items of one job) plus what the
process engine needs to send it and to settle it after a death: the pickled items, the
pickled function, a task id, the attempts (workers it killed) and how many of its items'
outcomes arrived. It keeps the items themselves as well as their pickle, to describe an
item in an error and to run items again alone after a death: twice the memory of a chunk
while it is in flight, the price of re-pickling only on that cold path.

Tasks are built (and pickled) in the thread that submits, so a pickling error is reported
on that call's items and the dispatcher thread runs no user ``__reduce__`` code, except when
it re-runs part of a chunk after a death (``split``/``sub``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._calls import Mode, describe, function_name
from .._engine import Chunk, FuncRef, Job
from .._errors import SerializationPhase, TaskSerializationError
from .._tracebacks import detach_traceback
from . import _serialize as ser

_task_ids = itertools.count(1)


def pickle_function(fn: Callable[..., Any]) -> bytes:
    """Pickle ``fn``; raises TaskSerializationError if impossible."""
    try:
        return ser.dumps(fn)
    except Exception as exc:
        detail = f"cannot pickle the function {function_name(fn)}: {exc}"
        raise TaskSerializationError.of(SerializationPhase.PICKLE_TASK, exc, detail=detail)


@dataclass(eq=False, slots=True)
class Task:
    """Items ``start .. start+count-1`` of ``job``, pickled for one worker. The chunk's
    fields are copied in: the dispatcher reads them on its hot path."""

    job: Job
    func: FuncRef
    blob: bytes  # the pickled function
    mode: Mode
    start: int
    items: Sequence[Any]  # a list, or a slice of the caller's tuple or range
    payload: ser.Payload  # large bytes inside are the caller's objects, not copies
    timeout: float = 0.0
    indexed: bool = True
    stream: bool = False
    item_deadline: bool = False
    task_id: int = 0  # set by make_tasks, from _task_ids
    # One (pid, exitcode) per worker this task's items killed; a tuple, so a task nobody
    # killed holds the shared empty one (one object fewer per pending call to collect).
    attempts: tuple[tuple[int, int | None], ...] = ()
    received: int = 0  # items whose outcome arrived (a stream task's arrive one by one)
    cancelled: bool = False  # its job was stopped (Engine.kill): drop it, whatever happens

    @property
    def count(self) -> int:
        return len(self.items)

    def describe(self, k: int) -> str:
        return describe(self.func.name, self.mode, self.items[k])

    def index(self, k: int) -> int | None:
        return self.start + k if self.indexed else None

    def chunk(self, begin: int, end: int) -> Chunk:
        """Items ``begin .. end-1`` of this task as a chunk of their own."""
        return Chunk(
            self.job, self.func, self.mode, self.start + begin, self.items[begin:end], self.timeout, self.indexed, self.stream,
            self.item_deadline,
        )  # fmt: skip

    def split(self, keep: Sequence[int]) -> list[Task]:
        """New single-item tasks for the items ``keep`` (indices within this task), each
        carrying this task's attempts."""
        out: list[Task] = []
        for k in keep:
            one = replace(self.chunk(k, k + 1), stream=False)
            for t in make_tasks(one, self.blob):
                t.attempts = self.attempts
                out.append(t)
        return out

    def sub(self, begin: int, end: int) -> list[Task]:
        """New tasks for items ``begin .. end-1`` (indices within this task), as one chunk."""
        return make_tasks(self.chunk(begin, end), self.blob) if begin < end else []

    def rest(self) -> list[Task]:
        """The items whose outcome has not arrived, as tasks to run again."""
        return [self] if not self.received else self.sub(self.received, self.count)


def make_tasks(chunk: Chunk, blob: bytes) -> list[Task]:
    """Pickle ``chunk`` into one task; items that cannot be pickled fail on its job at once.

    Normally returns one task. When some items cannot be pickled, those fail with
    TaskSerializationError and the others are returned as one task per run of good items.
    The caller flushes the job (see ``_engine``).
    """
    try:
        return [_task(chunk, chunk.start, chunk.items, ser.dump_payload(chunk.items), blob)]
    except Exception:
        pass
    tasks: list[Task] = []
    run: list[Any] = []
    run_start = chunk.start
    for k, item in enumerate(chunk.items):
        try:
            ser.dumps(item)
        except Exception as exc:
            if run:
                tasks.append(_task(chunk, run_start, run, ser.dump_payload(run), blob))
                run = []
            fail_unpicklable(chunk, k, exc)
            run_start = chunk.start + k + 1
        else:
            run.append(item)
    if run:
        tasks.append(_task(chunk, run_start, run, ser.dump_payload(run), blob))
    return tasks


def fail_unpicklable(chunk: Chunk, k: int, exc: Exception) -> None:
    """Item ``k`` of ``chunk`` could not be pickled (``exc``): it fails on its job."""
    position = chunk.start + k
    item = chunk.items[k]
    err = TaskSerializationError.of(
        SerializationPhase.PICKLE_TASK, exc, position if chunk.indexed else None, describe(chunk.func.name, chunk.mode, item)
    )
    detach_traceback(exc, "Traceback of the pickling error, in the owner")
    chunk.job.fail(position, err)


def _task(chunk: Chunk, start: int, items: Sequence[Any], payload: ser.Payload, blob: bytes) -> Task:
    return Task(
        chunk.job, chunk.func, blob, chunk.mode, start, items, payload, chunk.timeout, chunk.indexed, chunk.stream,
        chunk.item_deadline, next(_task_ids),
    )  # fmt: skip
