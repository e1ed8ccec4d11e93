"""RESULT frames into outcomes: unpickling in the owner, and the per-item failures it may
bring. Runs on the dispatcher thread; reports through the two callables it is given, so the
dispatcher keeps the bursts and the counts.

What a RESULT's payload is depends on its status (see ``_wire``): OK, a list of values;
ITEMS, ``(kinds, data)`` with one entry per item; FAILED, one encoded exception for every
item from ``first``. A payload that is not what its status promises is a ProtocolError: the
bytes came from somewhere else than the worker loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from .._engine import Job
from .._errors import SerializationPhase, TaskSerializationError
from .._tracebacks import detach_traceback
from . import _serialize as ser
from ._tasks import Task
from ._wire import Entry, ProtocolError, Status

Deliver = Callable[[Job, int, Sequence[Any]], None]
Fail = Callable[[Job, int, BaseException], None]


def load(status: int, body: memoryview, count: int) -> Any:
    """The payload, unpickled and checked. Raises ProtocolError if it does not fit its
    status; any other exception means it could not be unpickled (fail its items)."""
    decoded: Any = ser.loads(body) if status != Status.FAILED else ser.decode_exception(bytes(body))
    if status == Status.OK and not (isinstance(decoded, list) and len(decoded) == count):
        raise ProtocolError(f"an OK result that is not a list of {count} values")
    if status == Status.ITEMS and not _well_formed_items(decoded, count):
        raise ProtocolError(f"an ITEMS result that is not {count} entries")
    return decoded


def report(t: Task, first: int, count: int, status: int, decoded: Any, deliver: Deliver, fail: Fail) -> tuple[int, int]:
    """Report items ``first .. first+count-1`` of ``t``; returns (delivered, failed)."""
    if status == Status.OK:
        deliver(t.job, t.start + first, decoded)
        return count, 0
    if status == Status.ITEMS:
        kinds, data = decoded
        return _report_items(t, first, kinds, data, deliver, fail)
    describe_error(decoded, t, first)
    for k in range(first, first + count):
        fail(t.job, t.start + k, decoded)
    return 0, count


def report_unloadable(t: Task, first: int, count: int, exc: BaseException, fail: Fail) -> int:
    """The payload could not be unpickled (only a one-item result or builtin data, say out
    of memory: other multi-item results are pickled item by item): fail its items."""
    for k in range(first, first + count):
        _fail_unpickled(t, k, exc, fail)
    return count


def _report_items(t: Task, first: int, kinds: bytes, data: list[Any], deliver: Deliver, fail: Fail) -> tuple[int, int]:
    """Outcomes sent item by item: deliver runs of values at once, fail items alone."""
    job = t.job
    if not kinds.strip(b"\0"):  # Entry.VALUE only: builtin scalars, as they are
        deliver(job, t.start + first, data)
        return len(data), 0
    done = failed = 0
    run: list[Any] = []
    run_start = first
    for k, kind, blob in zip(itertools.count(first), kinds, data, strict=False):
        error: BaseException | None = None
        if kind == Entry.VALUE:
            value = blob
        elif kind == Entry.PICKLED:
            try:
                value = ser.loads(blob)
            except BaseException as exc:
                error = exc
        if kind != Entry.ERROR and error is None:
            if not run:
                run_start = k
            run.append(value)
            continue
        if run:
            deliver(job, t.start + run_start, run)
            done += len(run)
            run = []
        failed += 1
        if error is not None:
            _fail_unpickled(t, k, error, fail)
            continue
        try:
            err = ser.decode_exception(blob)
        except BaseException as exc:
            err = TaskSerializationError.of(SerializationPhase.LOAD_RESULT, exc, t.index(k), t.describe(k))
        describe_error(err, t, k)
        fail(job, t.start + k, err)
    if run:
        deliver(job, t.start + run_start, run)
        done += len(run)
    return done, failed


def _fail_unpickled(t: Task, k: int, exc: BaseException, fail: Fail) -> None:
    # Raised here, in the dispatcher thread: its frames would keep this thread's locals
    # (payloads, tasks) alive for as long as the user keeps the error.
    detach_traceback(exc, "Traceback of the unpickling error, in the owner")
    fail(t.job, t.start + k, TaskSerializationError.of(SerializationPhase.LOAD_RESULT, exc, t.index(k), t.describe(k)))


def _well_formed_items(decoded: object, count: int) -> bool:
    if not (isinstance(decoded, tuple) and len(decoded) == 2):
        return False
    kinds, data = decoded
    if not (isinstance(kinds, bytes) and isinstance(data, list) and len(kinds) == len(data) == count):
        return False
    return not kinds.translate(None, bytes(Entry))  # every kind is an Entry


def describe_error(exc: BaseException, t: Task, k: int) -> None:
    """A serialization error made in a worker learns which item it is about."""
    if isinstance(exc, TaskSerializationError) and exc.task is None:
        exc.describe(t.index(k), t.describe(k))
