"""The pipeline's own tests. Run them under chaos with ``pytest --robustpool-chaos=SEED``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline import render_all

from robustpool import RobustPool, WorkerLostError


@pytest.fixture
def pool() -> Iterator[RobustPool]:
    with RobustPool(2) as pool:
        yield pool


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_every_item_is_a_result_or_an_attributed_error(pool: RobustPool, tmp_path: Path) -> None:
    items = list(range(60))
    outcomes = render_all(pool, items, str(tmp_path))
    assert sorted(outcomes) == items  # nothing lost
    for item, got in outcomes.items():
        if isinstance(got, WorkerLostError):
            assert got.task_index == item  # the error names its item
        else:
            assert Path(got).read_text() == f"report for {item}: {item * item}\n"
    assert files_in(tmp_path) == sorted(Path(p).name for p in outcomes.values() if isinstance(p, str))


# A worker killed *after* render() wrote its file leaves that file behind, and for an item
# the consumer never sees (it stopped early) nobody can know: deaths come before render().
@pytest.mark.robustpool_chaos(phases=["before"])
def test_stopping_early_leaves_only_the_files_kept(pool: RobustPool, tmp_path: Path) -> None:
    outcomes = render_all(pool, range(100_000), str(tmp_path), keep=5)
    kept = [Path(p).name for p in outcomes.values() if isinstance(p, str)]
    assert len(kept) == 5
    assert files_in(tmp_path) == sorted(kept)  # every other result was cleaned
