"""The ways an iterator is closed, each keeping the promise that ``cleanup(result)`` runs
exactly once, in the owner, for every result computed but never handed to the consumer:
leaving ``with`` by an exception or by ``break``, dropping the iterator to garbage
collection, ``close()``, which cancels the tasks not yet started and cleans those that ran,
and ``terminate()`` with results buffered. The temp-file pipeline (a mapper that writes a
file, a consumer that reads and deletes it) must leave no file behind.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest

from robustpool import RobustPool

from ._support import GET, ConsumerError, _bounded, _identity, _marked_slow, _write_square

PIPELINE_N = 1000


def _consume(path: str) -> int:
    """The pipeline's consumer: read the file, delete it, return its number."""
    with open(path) as f:
        value = int(f.read())
    os.unlink(path)
    return value


def _started(marker_dir: Path) -> set[int]:
    return {int(name.split("-")[1]) for name in os.listdir(marker_dir) if name.startswith("started-")}


# --------------------------------------------------------------------------------------
# The temp-file pipeline
# --------------------------------------------------------------------------------------


PIPELINES = [pytest.param("imap", 1, id="imap"), pytest.param("imap_unordered", 4, id="imap_unordered-chunksize4")]


@pytest.mark.parametrize(("method", "chunksize"), PIPELINES)
def test_pipeline_consumer_raises_no_temp_file_left(tmp_path: Path, method: str, chunksize: int) -> None:
    values: list[int] = []
    mapper = functools.partial(_write_square, str(tmp_path))
    with pytest.raises(ConsumerError), RobustPool(2) as pool:
        imap = getattr(pool, method)
        with imap(mapper, range(PIPELINE_N), chunksize, cleanup=os.unlink) as it:
            for i, path in enumerate(_bounded(it)):
                values.append(_consume(path))
                if i == 3:
                    raise ConsumerError("the consumer gives up at item 3")
    assert os.listdir(tmp_path) == []
    assert len(values) == 4
    if method == "imap":
        assert values == [0, 1, 4, 9]
    else:
        assert len(set(values)) == 4 and all(round(v**0.5) ** 2 == v for v in values)


@pytest.mark.parametrize(("method", "chunksize"), PIPELINES)
def test_pipeline_consumer_breaks_no_temp_file_left(tmp_path: Path, method: str, chunksize: int) -> None:
    total = 0
    mapper = functools.partial(_write_square, str(tmp_path))
    with RobustPool(2) as pool:
        imap = getattr(pool, method)
        with imap(mapper, range(PIPELINE_N), chunksize, cleanup=os.unlink) as it:
            for i, path in enumerate(_bounded(it)):
                total += _consume(path)
                if i == 3:
                    break
        # close() waited for the running tasks and cleaned their results.
        assert os.listdir(tmp_path) == []
    assert os.listdir(tmp_path) == []
    if method == "imap":
        assert total == 0 + 1 + 4 + 9


def test_pipeline_iterator_dropped_after_break_then_pool_closed(tmp_path: Path) -> None:
    total = 0
    mapper = functools.partial(_write_square, str(tmp_path))
    with RobustPool(2) as pool:
        it = pool.imap(mapper, range(PIPELINE_N), cleanup=os.unlink)
        results = _bounded(it)
        for i, path in enumerate(results):
            total += _consume(path)
            if i == 3:
                break
        del results, it  # dropped, never closed: garbage collection keeps the promise
    assert os.listdir(tmp_path) == []
    assert total == 0 + 1 + 4 + 9


# --------------------------------------------------------------------------------------
# close() cancels the tasks not yet started
# --------------------------------------------------------------------------------------


def test_close_cancels_tasks_not_yet_started(tmp_path: Path) -> None:
    cleaned: list[int] = []
    with RobustPool(2) as pool:
        it = pool.imap(functools.partial(_marked_slow, str(tmp_path)), range(10), buffersize=10, cleanup=cleaned.append)
        assert it.next(timeout=GET) == 0
        time.sleep(0.15)  # the tasks after the first two get going
        started_before_close = _started(tmp_path)
        it.close()
        assert sorted(cleaned) == sorted(started_before_close - {0})
    assert _started(tmp_path) == started_before_close, "a task not yet started at close() ran anyway"
    assert len(started_before_close) < 10


# --------------------------------------------------------------------------------------
# terminate() with buffered results
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "chunksize"), PIPELINES)
def test_terminate_cleans_every_buffered_result_exactly_once(method: str, chunksize: int) -> None:
    cleaned: list[int] = []
    pool = RobustPool(2)
    try:
        it = getattr(pool, method)(_identity, range(40), chunksize, buffersize=64, cleanup=cleaned.append)
        handed = [it.next(timeout=GET) for _ in range(2)]
        time.sleep(1.0)  # the consumer dawdles; the other 38 results are buffered
        pool.terminate()
    finally:
        pool.terminate()
    assert len(set(handed)) == 2
    assert sorted(cleaned) == sorted(set(range(40)) - set(handed))  # each exactly once
    with pytest.raises(StopIteration):
        it.next(timeout=1.0)
