"""Inside a chunk only the failing (or killed) item fails: its neighbours' results come back,
a worker killed on one item is a WorkerLostError for that item alone, and a result the owner
cannot unpickle fails only itself, with nothing run twice and no file leaked. When any item
of a ``map``, ``map_async`` or ``starmap`` fails, every successful result of that call is
passed to ``cleanup`` before the error is raised, and a call that succeeds cleans nothing.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from robustpool import IMapIterator, RobustPool, WorkerLostError

from ._support import GET, SQUARES_BUT_13, _fail_at_6, _file_or_refuse, _kill_at_6, _mul_unless_13, _square, _square_unless_13

# --------------------------------------------------------------------------------------
# Chunk isolation
# --------------------------------------------------------------------------------------


def _outcomes(it: IMapIterator[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(it.next(timeout=GET))
        except StopIteration:
            raise AssertionError(f"only {len(out)} of {n} results") from None
        except Exception as exc:
            out.append(exc)
    with pytest.raises(StopIteration):
        it.next(timeout=GET)
    return out


def test_chunk_with_a_failing_item_fails_only_that_item() -> None:
    with RobustPool(2) as pool, pool.imap(_fail_at_6, range(16), chunksize=4) as it:
        out = _outcomes(it, 16)
    assert [v for i, v in enumerate(out) if i != 6] == [x * x for x in range(16) if x != 6]
    assert isinstance(out[6], ValueError) and str(out[6]) == "item 6 is bad"


def test_chunk_with_a_killed_worker_fails_only_the_running_item() -> None:
    with RobustPool(2) as pool, pool.imap(_kill_at_6, range(16), chunksize=4) as it:
        out = _outcomes(it, 16)
    assert [v for i, v in enumerate(out) if i != 6] == [x * x for x in range(16) if x != 6]
    err = out[6]
    assert isinstance(err, WorkerLostError), repr(err)
    assert err.signal is signal.SIGKILL and err.task_index == 6


@pytest.mark.parametrize("call", ["map_async-chunk8", "imap-chunk4", "imap-auto-batch"])
def test_an_unpicklable_result_in_a_chunk_fails_only_it_and_runs_nothing_twice(tmp_path: Path, call: str) -> None:
    # A chunk's results used to travel as one pickle: one the owner could not rebuild failed
    # the whole pickle, the chunk was re-run item by item, and the first run's files leaked.
    fn = functools.partial(_file_or_refuse, str(tmp_path), os.getpid())
    cleaned: list[str] = []
    with RobustPool(2) as pool:
        if call == "map_async-chunk8":
            with pytest.raises(Exception, match="refuse to be unpickled") as info:
                pool.map_async(fn, range(16), chunksize=8, cleanup=cleaned.append).get(timeout=GET)
            assert "unpickling the result in the owner" in str(info.value)
            handed: list[str] = []
        else:
            if call == "imap-auto-batch":
                pool.map(_square, range(2000), chunksize=1)  # tiny tasks: imap now batches items
            it = pool.imap(fn, range(16), chunksize=4 if call == "imap-chunk4" else 1)
            out = _outcomes(it, 16)
            assert isinstance(out[5], Exception) and "refuse to be unpickled" in str(out[5].__cause__)
            handed = [p for i, p in enumerate(out) if i != 5]
            assert [int(Path(p).read_text()) for p in handed] == [x * x for x in range(16) if x != 5]
    made = sorted(os.listdir(tmp_path))
    assert len(made) == 15, f"an item ran twice: {made}"
    assert sorted(os.path.basename(p) for p in handed + cleaned) == made


# --------------------------------------------------------------------------------------
# map with cleanup
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [None, 1, 4])
@pytest.mark.parametrize("variant", ["map_async", "map", "starmap"])
def test_map_failure_cleans_every_successful_result(variant: str, chunksize: int | None) -> None:
    cleaned: list[int] = []
    with RobustPool(2) as pool:
        with pytest.raises(ValueError, match="item 13 is bad"):
            if variant == "map_async":
                pool.map_async(_square_unless_13, range(20), chunksize, cleanup=cleaned.append).get(timeout=GET)
            elif variant == "map":
                pool.map(_square_unless_13, range(20), chunksize, cleanup=cleaned.append)
            else:
                pool.starmap(_mul_unless_13, [(x, x) for x in range(20)], chunksize, cleanup=cleaned.append)
        assert sorted(cleaned) == SQUARES_BUT_13
        # A successful map cleans nothing.
        assert pool.map(_square, range(5), cleanup=cleaned.append) == [0, 1, 4, 9, 16]
    assert sorted(cleaned) == SQUARES_BUT_13
