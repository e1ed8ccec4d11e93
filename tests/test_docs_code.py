"""Every ```python block of the docs and the README runs, as a script of its own.

A block is extracted with its page and line, written to a fresh temporary directory and run
there by this interpreter (so it cannot lean on files of the repository or on another
block). It must exit 0 within its time. A block whose first line is ``# not run: <why>``
is a sketch (a signature, say) and is only counted; there must be few of them. A block whose
first line is ``# hangs: <why>`` shows a standard-library hang: it must still be running
after a few seconds (then its whole process group is killed). A block that only includes a
file (``--8<-- "docs/examples/..."``, the snippets extension) shows that file as it is; such
files are run by the test named for them in ``INCLUDED_RUN_BY``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SKIP = "# not run:"
_HANGS = "# hangs:"
_INCLUDE = re.compile(r'^--8<-- "([^"]+)"\s*$')
HANG_WAIT = 5.0  # seconds a hanging example must still be running after
# Files shown whole by a page, and the test that runs them (a pytest project cannot run as
# a script of its own; a script whose output the page shows is checked by its own test).
INCLUDED_RUN_BY = {
    "docs/examples/chaos_project/pipeline.py": "tests/chaos/test_plugin.py",
    "docs/examples/chaos_project/test_pipeline.py": "tests/chaos/test_plugin.py",
    "docs/examples/dask_side_by_side.py": "tests/on_dask/test_docs_example.py",
}


class Block(NamedTuple):
    page: Path
    line: int
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in _FENCE.finditer(text):
            found.append(Block(page, text.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


def included(block: Block) -> str | None:
    """The path a block includes, if it is an include."""
    m = _INCLUDE.match(block.code.strip())
    return m.group(1) if m else None


BLOCKS = blocks()
INCLUDES = [b for b in BLOCKS if included(b)]
RUN = [b for b in BLOCKS if not b.code.startswith((_SKIP, _HANGS)) and not included(b)]
HANG = [b for b in BLOCKS if b.code.startswith(_HANGS)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
def test_the_block_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    left = sorted(p.name for p in tmp_path.iterdir() if p != script)
    assert not left, f"{block.name} left files behind in its directory: {left}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("block", HANG, ids=[b.name for b in HANG])
def test_the_block_that_shows_a_hang_hangs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code)
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=HANG_WAIT)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the example and the pool's workers, in its session
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize("block", INCLUDES, ids=[b.name for b in INCLUDES])
def test_an_included_file_is_run_by_its_test(block: Block) -> None:
    path = included(block)
    assert path in INCLUDED_RUN_BY, f"{block.name} includes {path}: name the test that runs it in INCLUDED_RUN_BY"
    assert (ROOT / path).is_file(), f"{block.name} includes {path}, which does not exist"
    runner = (ROOT / INCLUDED_RUN_BY[path]).read_text()
    assert Path(path).name in runner, f"{INCLUDED_RUN_BY[path]} does not read {path}"


def test_the_docs_have_examples_and_few_sketches() -> None:
    sketches = [b.name for b in BLOCKS if b.code.startswith(_SKIP)]
    assert len(RUN) >= 10, f"only {len(RUN)} runnable examples found: is the fence pattern right?"
    assert len(sketches) <= 3, f"too many blocks that do not run: {sketches}"
