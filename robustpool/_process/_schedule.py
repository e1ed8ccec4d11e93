"""How much work to put where: timing estimates per function, pure and unit-tested.

The dispatcher learns from every result how long its function's items take (the worker
measures it), and uses the estimates to decide two things:

* ``depth``: how many tasks to keep queued on one worker, so tiny tasks hide the round trip
  and a worker never idles between two short tasks, while slow tasks go one at a time;
* ``batch_size``: how many consecutive items of a chunksize-1 ``imap`` to send as one task,
  so tiny items cost one frame per batch instead of one each.

Only the dispatcher thread writes; ``batch_size`` is read from consumer threads too (a
stale estimate only sizes a batch).
"""

from __future__ import annotations

_BATCH_TARGET_S = 0.0002  # imap(chunksize=1) batches tiny items up to this much work
_MAX_BATCH = 32
_MAX_DEPTH = 64  # most tasks queued on one worker
_TARGET_QUEUE_S = 0.002  # keep about this much work queued per worker, for tiny tasks
_PREFETCH_BELOW_S = 0.01  # tasks shorter than this always have a 2nd one queued behind them
_ESTIMATES = 256  # functions whose timings are remembered


class Estimates:
    """Smoothed seconds per item, and per task (what one frame of the task costs), by
    function id."""

    def __init__(self) -> None:
        self._item_s: dict[int, float] = {}
        self._task_s: dict[int, float] = {}

    def item_seconds(self, func_id: int) -> float | None:
        """The smoothed seconds one item of this function takes, or None before its first result."""
        return self._item_s.get(func_id)

    def learn(self, func_id: int, spent: float, count: int, task_count: int) -> None:
        """Fold a result's timing in: ``count`` items took ``spent`` seconds, in a task of
        ``task_count`` items."""
        per_item = spent / max(count, 1)
        old = self._item_s.get(func_id)
        if old is None:
            if len(self._item_s) >= _ESTIMATES:
                self._item_s.clear()
                self._task_s.clear()
            self._item_s[func_id] = per_item
            self._task_s[func_id] = per_item * task_count
            return
        self._item_s[func_id] = 0.8 * old + 0.2 * per_item
        self._task_s[func_id] = 0.8 * self._task_s[func_id] + 0.2 * per_item * task_count

    def depth(self, func_id: int, cancellable: bool) -> int:
        """How many tasks of this function to keep on one worker (the running one included).

        The running task plus about _TARGET_QUEUE_S of work behind it, so tiny tasks hide
        the round trip; and at least one task behind the running one while tasks take
        under _PREFETCH_BELOW_S, so a worker never idles for a round trip between two
        short tasks (on a machine whose cores the workers keep busy, the owner's turn to
        send the next task can take longer than the task). Slow tasks go one at a time,
        so a cancelled job has at most one task of under _PREFETCH_BELOW_S committed per
        worker beyond the running ones. Until a function's timing is known, a job that can
        be cancelled (imap, futures) sends one task at a time; one that cannot (map_async,
        apply_async) keeps a second queued.
        """
        est = self._task_s.get(func_id)
        if est is None:
            return 1 if cancellable else 2
        if est >= _PREFETCH_BELOW_S:
            return 1
        return max(2, min(_MAX_DEPTH, 1 + int(_TARGET_QUEUE_S / max(est, 1e-7))))

    def batch_size(self, func_id: int, ahead: int, workers: int) -> int:
        """How many consecutive items of a chunksize-1 ``imap`` to send as one task.

        Items keep their own result, error, timeout and attribution inside a task, so the
        only effect is fewer frames: worth it when the function's items are tiny (about
        _BATCH_TARGET_S of work per task), never more than leaves every worker a share of
        the window ``ahead``.
        """
        ewma = self._item_s.get(func_id)
        if ewma is None:
            return 1
        share = max(1, ahead // (2 * workers))
        return max(1, min(_MAX_BATCH, share, int(_BATCH_TARGET_S / max(ewma, 1e-7))))
