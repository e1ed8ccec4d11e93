"""Every ```python block of the docs and the README runs, as a script of its own.

A block is extracted with its page and line, written to a fresh temporary directory and run
there by this interpreter (so it cannot lean on files of the repository or on another
block). It must exit 0 within its time. A block whose first line is ``# not run: <why>``
is a sketch (a signature, say) and is only counted; there must be few of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SKIP = "# not run:"


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


BLOCKS = blocks()
RUN = [b for b in BLOCKS if not b.code.startswith(_SKIP)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
def test_the_block_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    left = sorted(p.name for p in tmp_path.iterdir() if p != script)
    assert not left, f"{block.name} left files behind in its directory: {left}"


def test_the_docs_have_examples_and_few_sketches() -> None:
    sketches = [b.name for b in BLOCKS if b.code.startswith(_SKIP)]
    assert len(RUN) >= 10, f"only {len(RUN)} runnable examples found: is the fence pattern right?"
    assert len(sketches) <= 3, f"too many blocks that do not run: {sketches}"
