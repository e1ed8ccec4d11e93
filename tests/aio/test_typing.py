"""What users write from asyncio type-checks under mypy --strict, with the right types.

One snippet, checked once (the installed mypy, in a child process, on a temporary file), with
``reveal_type`` on every awaited value; each test reads its own lines from the report.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from mypy_run import mypy_strict

SNIPPET = """
import asyncio
from robustpool import RobustExecutor, RobustPool

def add(a: int, b: int) -> int:
    return a + b

async def main() -> None:
    loop = asyncio.get_running_loop()
    async with RobustPool(2) as pool, RobustExecutor(2) as ex:
        reveal_type(await pool.apply_async(add, (1, 2)))  # good: apply_async
        reveal_type(await pool.map_async(str, [1, 2]))  # good: map_async
        reveal_type(await pool.starmap_async(add, [(1, 2)]))  # good: starmap_async
        async for x in pool.imap(str, [1]):
            reveal_type(x)  # good: imap
        async for y in pool.imap_unordered(str, [1]):
            reveal_type(y)  # good: imap_unordered
        reveal_type(await loop.run_in_executor(ex, add, 1, 2))  # good: run_in_executor
        reveal_type(await pool.submit(add, 1, 2))  # submit: pool.submit
        reveal_type(await ex.submit(add, 1, 2))  # submit: executor.submit
"""

EXPECTED = {
    "apply_async": "int",
    "map_async": "list[str]",
    "starmap_async": "list[int]",
    "imap": "str",
    "imap_unordered": "str",
    "run_in_executor": "int",
    "pool.submit": "int",
    "executor.submit": "int",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy's messages for each tagged line of the snippet, by tag."""
    tmp = tmp_path_factory.mktemp("aio-typing")
    source = tmp / "snippet.py"
    text = textwrap.dedent(SNIPPET)
    source.write_text(text)
    out, _status = mypy_strict(source, tmp / ".mypy_cache")
    tags = {n: m.group(1) for n, line in enumerate(text.splitlines(), 1) if (m := re.search(r"# \w+: (\S+)$", line))}
    by_tag: dict[str, list[str]] = {tag: [] for tag in tags.values()}
    for message in out.splitlines():
        m = re.match(rf"{re.escape(str(source))}:(\d+): (.*)", message)
        if m is None:
            continue
        line = int(m.group(1))
        assert line in tags, f"mypy complains about an untagged line: {message}"
        by_tag[tags[line]].append(m.group(2))
    assert set(by_tag) == set(EXPECTED)
    return by_tag


def _check(report: dict[str, list[str]], tag: str) -> None:
    messages = [m.replace("builtins.", "") for m in report[tag]]  # older mypy spells builtins out
    assert messages == [f'note: Revealed type is "{EXPECTED[tag]}"'], messages


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tag", ["apply_async", "map_async", "starmap_async", "imap", "imap_unordered", "run_in_executor"])
def test_awaited_values_have_their_types(report: dict[str, list[str]], tag: str) -> None:
    _check(report, tag)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tag", ["pool.submit", "executor.submit"])
def test_awaiting_a_submit_future_type_checks(report: dict[str, list[str]], tag: str) -> None:
    _check(report, tag)
