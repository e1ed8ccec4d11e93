"""Attribution of a worker's death: pure functions, tested as a table without processes.

When a worker dies, the dispatcher first reads every complete result it sent, then asks two
questions here:

* ``read_slot``: what was the worker doing? Its progress slot (see ``_wire``) names the task,
  the phase and the item; a task it finished whose result never arrived counts as REPLYING.
* ``settle``: what becomes of the task in the slot (the culprit)? The death counts as an
  attempt of the culprit item: it is retried while ``retries`` allow, else it fails with
  ``TaskTimeoutError`` (the supervisor killed it for its deadline) or ``WorkerLostError``.
  Items of the task that finished before it, whose results died with the worker, run again
  without counting; so do the tasks queued behind it (the caller requeues those).

A death during the whole of a multi-item task (unpickling it, pickling or sending its
results) cannot be pinned on one item: each item not yet delivered runs again alone,
carrying the attempt, so only the guilty one can kill again (isolation costs the guilty item
one more run than ``retries``).
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._errors import TaskTimeoutError, WorkerLostError
from ._control import TIMEOUT, WorkerExited
from ._tasks import Task
from ._wire import (
    BUSY,
    PHASE_WORDS,
    SLOT_ERRNO,
    SLOT_FAULT,
    SLOT_ITEM,
    SLOT_PHASE,
    SLOT_STARTED,
    SLOT_TASK,
    Fault,
    Phase,
)

log = logging.getLogger("robustpool")


@dataclass(frozen=True, slots=True)
class SlotReading:
    """What a dead worker's progress slot says (see ``_wire``)."""

    task_id: int
    phase: Phase
    item: int
    started: int  # monotonic ns
    fault: Fault = Fault.NONE
    errno: int = 0

    @property
    def busy(self) -> bool:
        return self.phase in BUSY

    def fault_reason(self) -> str | None:
        """Why the worker's own loop gave up, in words, if it said so."""
        err = f" ({os.strerror(self.errno)})" if self.errno else ""
        if self.fault == Fault.SEND:
            return f"it could not send to the owner{err}: did the task close or replace file descriptors it inherited?"
        if self.fault == Fault.RECEIVE:
            return f"it could not read from the owner{err}: did the task close or replace file descriptors it inherited?"
        if self.fault == Fault.PROTOCOL:
            return "it received bytes that are not robustpool frames: did the task read from file descriptors it inherited?"
        if self.fault == Fault.LOOP:
            return "robustpool's worker loop failed; its traceback is on the worker's stderr"
        return None


def read_slot(view: Sequence[int], inflight: Sequence[Task], pid: int | None = None) -> SlotReading:
    """What a dead worker was doing, from its slot and the tasks it held (oldest first).

    A task the worker finished but whose result did not arrive is reported as REPLYING
    even if the worker got as far as marking itself idle. Garbage (something in the worker
    scribbled over shared memory) must not take the dispatcher down: then the oldest task
    queued on the worker, the only one that can have been running, is taken as the
    culprit, in an unknown item.
    """
    task_id, raw, item, started = view[SLOT_TASK], view[SLOT_PHASE], view[SLOT_ITEM], view[SLOT_STARTED]
    raw_fault, errno = view[SLOT_FAULT], view[SLOT_ERRNO]
    fault = Fault(raw_fault) if raw_fault in Fault._value2member_map_ else Fault.LOOP
    known = {t.task_id: t for t in inflight}
    if raw in (Phase.IDLE, Phase.REPLYING) and task_id not in known:
        # Its last task's result arrived (the worker may not have marked itself idle yet).
        return SlotReading(task_id, Phase.IDLE, item, started, fault, errno)
    if raw == Phase.INIT:
        return SlotReading(task_id, Phase.INIT, item, started, fault, errno)  # nothing was running
    if raw == Phase.IDLE:
        raw = Phase.REPLYING
    if raw in Phase._value2member_map_ and task_id in known and 0 <= item < known[task_id].count:
        return SlotReading(task_id, Phase(raw), item, started, fault, errno)
    if not inflight:
        return SlotReading(0, Phase.IDLE, 0, started, fault, errno)
    log.error("robustpool: worker %s left an unreadable progress slot; blaming its oldest task", pid)
    return SlotReading(inflight[0].task_id, Phase.LOADING, 0, time.monotonic_ns(), fault, errno)


def owes_items(view: Sequence[int], inflight: Sequence[Task]) -> bool:
    """True while a live worker's stream task has finished items whose results have not
    arrived yet (its slot is past them)."""
    phase, task_id, item = view[SLOT_PHASE], view[SLOT_TASK], view[SLOT_ITEM]
    for t in inflight:
        if t.task_id == task_id and t.stream:
            done = t.count if phase == Phase.REPLYING else item if phase in (Phase.RUNNING, Phase.DUMPING) else 0
            return done > t.received
    return False


class Outcome(enum.Enum):
    INNOCENT = "innocent"  # the death was not the task's doing: it runs again, no attempt
    ISOLATE = "isolate"  # the culprit item is unknown: every item runs again alone
    RETRY = "retry"  # the culprit item runs again on a fresh worker
    TIMED_OUT = "timed out"  # the culprit item fails with TaskTimeoutError
    LOST = "lost"  # the culprit item fails with WorkerLostError


@dataclass(slots=True)
class Verdict:
    """What becomes of the task a worker died in: ``again`` runs again (first, in this
    order); ``error`` fails item ``item`` of the task (an index within it)."""

    outcome: Outcome
    again: list[Task] = field(default_factory=list)
    item: int = 0
    error: BaseException | None = None


def settle(t: Task, death: WorkerExited, slot: SlotReading, reason: str | None, retries: int, stopping: bool) -> Verdict:
    """Settle ``t``, the task in a dead worker's slot; records the attempt on ``t``."""
    pid = death.pid
    t.attempts += ((pid, death.exitcode),)
    phase = slot.phase
    per_item = phase == Phase.RUNNING or (phase == Phase.DUMPING and t.stream)
    if not per_item:
        if t.count - t.received > 1:
            return Verdict(Outcome.ISOLATE, t.split(range(t.received, t.count)))
        k = t.received
    else:
        k = min(max(slot.item, 0), t.count - 1)
        if k < t.received:
            # A stream task between items: item k's outcome had arrived, so the death is
            # nobody's doing here (an outside kill); run the rest again.
            t.attempts = t.attempts[:-1]
            return Verdict(Outcome.INNOCENT, t.rest())
    # Items before k finished, but their results died with the worker: run them again.
    again = t.sub(t.received, k) + t.sub(k + 1, t.count)
    for nt in again:
        nt.attempts = ()
    if death.reason == TIMEOUT and death.task_id == t.task_id:
        elapsed = (time.monotonic_ns() - slot.started) / 1e9
        error: BaseException = TaskTimeoutError(t.timeout, elapsed, t.index(k), t.describe(k), pid)
        return Verdict(Outcome.TIMED_OUT, again, k, error)
    if len(t.attempts) <= retries and not stopping:
        retry = t.sub(k, k + 1)
        for nt in retry:
            nt.attempts = t.attempts
        return Verdict(Outcome.RETRY, retry + again, k)
    words = PHASE_WORDS.get(phase, "running")
    error = WorkerLostError(pid, death.exitcode, t.index(k), t.describe(k), words, t.attempts, death.last_rss, reason)
    return Verdict(Outcome.LOST, again, k, error)
