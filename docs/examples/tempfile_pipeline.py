"""A temp-file pipeline that leaves nothing behind, even when the consumer fails mid-stream.

Each task squares a number and writes the square to a fresh temp file, returning its path;
the consumer reads, sums and deletes each file. With ``cleanup=os.unlink`` every file whose
path never reached the consumer -- already computed, buffered, or still being computed
when the consumer stopped -- is deleted exactly once. Run it:

    python docs/examples/tempfile_pipeline.py
"""

from __future__ import annotations

import os
import sys
import tempfile

from robustpool import RobustPool


def square_to_file(args: tuple[int, str]) -> str:
    x, directory = args
    fd, path = tempfile.mkstemp(dir=directory, suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(str(x * x))
    return path


def consume(paths: object, fail_at: int | None) -> int:
    total = 0
    for i, path in enumerate(paths):  # type: ignore[call-overload]
        try:  # a result handed to you is yours to clean: cleanup= covers the rest
            if i == fail_at:
                raise RuntimeError(f"the consumer failed at item {i}")
            with open(path) as f:
                total += int(f.read())
        finally:
            os.unlink(path)
    return total


def main(n: int = 1000, fail_at: int | None = 3) -> int:
    with tempfile.TemporaryDirectory() as directory:
        with RobustPool(2) as pool:
            items = ((x, directory) for x in range(n))
            with pool.imap(square_to_file, items, cleanup=os.unlink) as paths:
                try:
                    total = consume(paths, fail_at)
                    print(f"sum of squares: {total}")
                except RuntimeError as err:
                    print(f"stopped early: {err}")
        left = os.listdir(directory)
        print(f"files left behind: {len(left)}")
        return len(left)


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
