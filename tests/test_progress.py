"""progress=: a tqdm bar that counts items as they complete, item by item, with failures in
its postfix, closed however the call ends."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tqdm import tqdm

from robustpool import RobustPool, RobustThreadPool, RobustThreadPoolExecutor

GET = 30.0


def slow(x: int) -> int:
    time.sleep(0.02)
    if x == 7:
        raise ValueError(x)
    return x


class Recording(tqdm):  # type: ignore[misc]  # tqdm is untyped
    """A bar of the caller's own that remembers every step."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(file=io.StringIO(), mininterval=0, **kwargs)
        self.steps: list[int] = []
        self.postfixes: list[str] = []

    def update(self, n: float | None = 1) -> bool | None:
        self.steps.append(int(n or 0))
        return super().update(n)  # type: ignore[no-any-return]

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        self.postfixes.append(repr(kwargs))
        super().set_postfix(*args, **kwargs)


@pytest.fixture(params=["process", "thread"])
def pool(request: pytest.FixtureRequest) -> Iterator[RobustPool | RobustThreadPool]:
    with RobustPool(2) if request.param == "process" else RobustThreadPool(2) as p:
        yield p


def test_map_counts_every_item_one_at_a_time_and_shows_failures(pool: RobustPool | RobustThreadPool) -> None:
    bar = Recording()
    with pytest.raises(ValueError):
        pool.map(slow, range(20), chunksize=5, progress=bar)
    assert bar.total == 20 and bar.n == 20
    assert max(bar.steps) < 5  # never a whole chunk at once
    assert "'failed': 1" in bar.postfixes[-1] and "failed=1" in str(bar)
    bar.close()


def test_an_owned_bar_closes_on_break_and_at_the_end(pool: RobustPool | RobustThreadPool) -> None:
    out = io.StringIO()
    for x in pool.imap(abs, range(1000), progress={"file": out, "mininterval": 0}):
        if x == 10:
            break
    assert out.getvalue().endswith("\n")  # tqdm writes its last line when it closes
    out = io.StringIO()
    assert sum(pool.imap_unordered(abs, range(50), progress={"file": out})) == 1225
    assert out.getvalue().endswith("\n") and "50/50" in out.getvalue()


def test_a_generator_has_no_total_unless_given(pool: RobustPool | RobustThreadPool) -> None:
    bar = Recording()
    assert list(pool.imap(abs, (k for k in range(30)), progress=bar)) == list(range(30))
    assert bar.total is None and bar.n == 30
    given = Recording(total=30)
    assert len(pool.starmap(pow, ((k, 2) for k in range(30)), progress=given)) == 30
    assert given.total == 30 and given.n == 30
    bar.close()
    given.close()


def test_the_executors_map_has_a_bar_too() -> None:
    bar = Recording()
    with RobustThreadPoolExecutor(2) as ex:
        assert list(ex.map(pow, range(40), [2] * 35, progress=bar)) == [k * k for k in range(35)]
    assert bar.total == 35 and bar.n == 35  # the shortest input's length, as zip
    bar.close()


def test_bad_values_and_a_missing_tqdm_are_errors_at_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    with RobustThreadPool(1) as pool:
        with pytest.raises(TypeError, match="progress must be True, a dict of tqdm options or a tqdm bar"):
            pool.map(abs, [1], progress="yes")
        monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
        with pytest.raises(ImportError, match=r"pip install 'robustpool\[progress\]'"):
            pool.imap(abs, [1], progress=True)
        assert pool.map(abs, [-1]) == [1]  # nothing was started by the refused calls
