"""The scaling-out page's side-by-side (docs/examples/dask_side_by_side.py) runs, and its
robustpool half shows what the page says: on a Dask cluster, the item that SIGKILLs its
process is the only one that fails, with a ``WorkerLostError`` naming the signal and the Dask
worker; every item ran once; the Dask workers are the same afterwards."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "examples" / "dask_side_by_side.py"


def _halves(out: str) -> dict[str, str]:
    """The script's output, by half: "plain Dask" and "robustpool on Dask"."""
    parts = re.split(r"^== ", out, flags=re.MULTILINE)[1:]
    return {part.split(":", 1)[0]: part for part in parts}


@pytest.mark.timeout(240)
def test_the_side_by_side_fails_only_the_culprit_on_robustpool() -> None:
    # Two LocalClusters' worth of starts and, in the plain half, four Dask worker restarts.
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    halves = _halves(done.stdout)
    assert set(halves) == {"plain Dask", "robustpool on Dask"}, done.stdout
    assert "item 5 failed: " in halves["plain Dask"], halves["plain Dask"]  # KilledWorker, as measured

    ours = halves["robustpool on Dask"]
    assert "19 of 20 items returned their square" in ours and "items 0-4, 6-19" in ours, ours
    failed = re.findall(r"^item (\d+) failed: (.*)$", ours, flags=re.MULTILINE)
    assert [i for i, _ in failed] == ["5"], ours
    error = failed[0][1]
    assert re.match(
        r"WorkerLostError: worker \d+ on tcp://127\.0\.0\.1:\d+ died from SIGKILL \(-9\) while running task #5 work\(", error
    ), error
    assert "runs of each item: each ran once" in ours, ours
    before = re.search(r"^Dask workers before: (.*)$", ours, flags=re.MULTILINE)
    after = re.search(r"^Dask workers after: +(.*)$", ours, flags=re.MULTILINE)
    assert before and after and before.group(1) == after.group(1), ours  # no Dask worker died or was replaced
    host = re.search(r" on (tcp://\S+) died", error)
    assert host and host.group(1) in before.group(1), (error, before.group(1))
