"""Command line: ``python -m robustpool demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robustpool", description="robustpool command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a temp-file pipeline under injected faults, then the standard library at one")
    demo.add_argument("--items", type=int, default=40, help="how many items to map (default 40; faults repeat every 20)")
    demo.add_argument("--no-compare", action="store_true", help="skip running multiprocessing.Pool and ProcessPoolExecutor")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run

        if args.items < 10:
            parser.error("--items must be at least 10")
        return run(args.items, compare=not args.no_compare)
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
