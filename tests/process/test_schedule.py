"""Estimates as tables: how many tasks to queue on a worker (``depth``) and how many items of a
chunksize-1 imap to batch into one task (``batch_size``), from what ``learn`` was told."""

from __future__ import annotations

import pytest

from robustpool._process._schedule import Estimates

F = 7  # a function id


def test_an_unknown_function() -> None:
    est = Estimates()
    assert est.depth(F, cancellable=True) == 1  # imap, futures: one task at a time
    assert est.depth(F, cancellable=False) == 2  # map_async, apply_async: one queued behind
    for ahead, workers in [(1, 1), (64, 1), (10_000, 2)]:
        assert est.batch_size(F, ahead, workers) == 1


@pytest.mark.parametrize(
    ("spent", "count", "task_count", "depth"),
    [
        (0.0, 1, 1, 64),  # instant: the deepest queue
        (1e-6, 1, 1, 64),
        (1e-5, 1, 1, 64),  # 2 ms of work would be 200 tasks: capped
        (1e-4, 1, 1, 21),  # 1 + 2 ms / 0.1 ms
        (5e-4, 1, 1, 5),
        (1e-3, 1, 1, 3),
        (5e-3, 1, 1, 2),  # under 10 ms: always one queued behind the running one
        (9.9e-3, 1, 1, 2),
        (0.01, 1, 1, 1),  # slow: one at a time
        (1.0, 1, 1, 1),
        (1e-3, 10, 10, 3),  # 0.1 ms items in tasks of 10: 1 ms per task
        (1e-5, 1, 100, 3),  # depth goes by the task (100 items of 10 us), not the item
        (2e-3, 0, 1, 2),  # a count of 0 counts as 1
    ],
)
def test_depth_after_one_result(spent: float, count: int, task_count: int, depth: int) -> None:
    est = Estimates()
    est.learn(F, spent, count, task_count)
    assert est.depth(F, cancellable=True) == depth
    assert est.depth(F, cancellable=False) == depth  # once known, cancellable no longer matters


@pytest.mark.parametrize(
    ("item_s", "ahead", "workers", "batch"),
    [
        (1e-6, 64, 1, 32),  # 0.2 ms would be 200 items: capped at 32
        (1e-6, 1000, 1, 32),
        (0.0, 64, 1, 32),
        (1e-6, 64, 4, 8),  # each of 4 workers gets a share of half the window: 64 // 8
        (1e-6, 8, 2, 2),
        (1e-6, 1, 1, 1),  # a window of one item
        (1e-6, 3, 2, 1),
        (1e-5, 64, 1, 20),  # 0.2 ms / 10 us
        (1e-5, 16, 1, 8),
        (1e-4, 64, 1, 2),
        (5e-4, 64, 1, 1),  # too slow to batch
        (1.0, 64, 1, 1),
    ],
)
def test_batch_size_after_one_result(item_s: float, ahead: int, workers: int, batch: int) -> None:
    est = Estimates()
    est.learn(F, item_s * 10, 10, 10)
    assert est.batch_size(F, ahead, workers) == batch


@pytest.mark.parametrize(("fast_results", "depth"), [(0, 1), (1, 1), (10, 1), (11, 2), (20, 2), (30, 17), (40, 64)])
def test_a_slow_function_that_turns_fast_deepens_gradually(fast_results: int, depth: int) -> None:
    """The estimate is smoothed (each result weighs 0.2): 0.1 s per task falls under the
    10 ms prefetch line after 11 results of 1 us."""
    est = Estimates()
    est.learn(F, 0.1, 1, 1)
    for _ in range(fast_results):
        est.learn(F, 1e-6, 1, 1)
    assert est.depth(F, cancellable=True) == depth


def test_one_slow_result_stops_batching_at_once() -> None:
    est = Estimates()
    for _ in range(5):
        est.learn(F, 1e-6, 1, 1)
    assert est.batch_size(F, 64, 1) == 32 and est.depth(F, True) == 64
    est.learn(F, 0.1, 1, 1)  # 0.2 * 0.1 s = 20 ms per item
    assert est.batch_size(F, 64, 1) == 1 and est.depth(F, True) == 1


def test_functions_are_estimated_apart() -> None:
    est = Estimates()
    est.learn(1, 1e-6, 1, 1)
    est.learn(2, 1.0, 1, 1)
    assert (est.depth(1, True), est.batch_size(1, 64, 1)) == (64, 32)
    assert (est.depth(2, True), est.batch_size(2, 64, 1)) == (1, 1)
    assert est.depth(3, True) == 1 and est.batch_size(3, 64, 1) == 1


def test_at_most_256_functions_are_remembered() -> None:
    est = Estimates()
    for func_id in range(256):
        est.learn(func_id, 1e-6, 1, 1)
    est.learn(0, 1e-6, 1, 1)  # a known one: nothing is forgotten
    assert all(est.depth(func_id, True) == 64 for func_id in range(256))
    est.learn(1000, 1.0, 1, 1)  # the 257th: the others are forgotten
    assert est.depth(1000, True) == 1 and est.batch_size(1000, 64, 1) == 1
    assert est.depth(0, True) == 1 and est.depth(0, False) == 2 and est.batch_size(0, 64, 1) == 1
    est.learn(0, 1e-6, 1, 1)
    assert est.depth(0, True) == 64  # learned afresh, not smoothed with the forgotten estimate
