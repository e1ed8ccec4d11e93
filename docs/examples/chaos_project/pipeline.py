"""A temp-file pipeline: workers render items into files, the consumer keeps what it needs.

Each worker writes one file per item and returns its path; the consumer takes the paths in
order and may stop early. ``cleanup=`` deletes the file of every result the consumer never
took, and a lost worker's item is recorded with its error (and whatever file it left is
removed), so the pipeline ends with exactly the files it kept.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from robustpool import RobustPool, WorkerLostError


def render(item: int, out_dir: str) -> str:
    """The worker's part: write the item's report, atomically, and return its path."""
    path = Path(out_dir, f"item-{item}.txt")
    partial = path.with_name(f"item-{item}.part-{os.getpid()}")
    partial.write_text(f"report for {item}: {item * item}\n")
    os.replace(partial, path)
    return str(path)


def discard(path: str) -> None:
    """The cleanup: the file of a result nobody took."""
    os.unlink(path)


def render_all(pool: RobustPool, items: Sequence[int], out_dir: str, keep: int | None = None) -> dict[int, str | WorkerLostError]:
    """Render ``items`` in order; stop once ``keep`` files are rendered (all by default).

    Returns each item the consumer saw with its file's path or the error of its lost worker.
    """
    outcomes: dict[int, str | WorkerLostError] = {}
    kept = 0
    results = pool.imap(functools.partial(render, out_dir=out_dir), items, cleanup=discard)
    with results:  # leaving it closes the iterator: cleanup runs for every result not taken
        for item in items:
            try:
                path = next(results)
            except StopIteration:
                break
            except WorkerLostError as err:
                # The worker died with this item; it may have written (part of) a file first.
                for left in Path(out_dir).glob(f"item-{item}.*"):
                    left.unlink(missing_ok=True)
                outcomes[item] = err
                continue
            outcomes[item] = path
            kept += 1
            if keep is not None and kept >= keep:
                break
    return outcomes
