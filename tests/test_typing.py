"""The public signatures are precise: mypy rejects calls that cannot work.

Each snippet is type-checked with mypy --strict (the installed mypy, in a child process, on a
temporary file); the bad ones must fail with the expected error code, the good one must pass.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy_run import mypy_strict

HEADER = """
from concurrent.futures import Future
from robustpool import RobustPool, AsyncResult, IMapIterator, MapResult

def square(x: int) -> int:
    return x * x

def add(a: int, b: int) -> int:
    return a + b

pool = RobustPool(2)
"""

GOOD = """
squares: list[int] = pool.map(square, [1, 2, 3])
lazy: IMapIterator[int] = pool.imap(square, range(10), cleanup=lambda r: None)
later: MapResult[int] = pool.map_async(square, (1, 2))
one: AsyncResult[int] = pool.apply_async(square, (3,))
fut: Future[int] = pool.submit(add, 1, b=2)
total: list[int] = pool.starmap(add, [(1, 2)])
"""

# Each bad line and the error codes that may reject it (for a result assigned to the wrong
# type, mypy infers the call's type from the target and reports the argument instead).
BAD = {
    "map-wrong-item-type": ('pool.map(square, ["a"])', ("arg-type",)),
    "map-result-type": ("wrong: list[str] = pool.map(square, [1])", ("assignment", "arg-type")),
    "imap-result-type": ("it: IMapIterator[str] = pool.imap(square, [1])", ("assignment", "arg-type")),
    "imap-cleanup-type": ("pool.imap(square, [1], cleanup=lambda r: r.upper())", ("attr-defined",)),
    "submit-wrong-args": ('pool.submit(add, 1, "two")', ("arg-type",)),
    "submit-missing-arg": ("pool.submit(add, 1)", ("call-arg",)),
    "submit-result-type": ("f: Future[str] = pool.submit(add, 1, 2)", ("assignment", "arg-type")),
}


def _check(tmp_path: Path, body: str) -> tuple[str, int]:
    source = tmp_path / "snippet.py"
    source.write_text(textwrap.dedent(HEADER) + textwrap.dedent(body))
    return mypy_strict(source, tmp_path / ".mypy_cache")


@pytest.mark.timeout(120)
def test_correct_calls_type_check(tmp_path: Path) -> None:
    out, status = _check(tmp_path, GOOD)
    assert status == 0, out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(BAD))
def test_calls_that_cannot_work_are_type_errors(name: str, tmp_path: Path) -> None:
    line, codes = BAD[name]
    out, status = _check(tmp_path, line)
    assert status == 1, f"mypy accepted {line!r}:\n{out}"
    assert any(f"[{code}]" in out for code in codes), out
