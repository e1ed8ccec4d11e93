"""Command line: parse the options, run the harness, print the table, write the Markdown."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from . import config as configuration
from .cases import CASES
from .harness import run
from .peers import PEERS, THREAD_CASES
from .report import markdown, text


def _names(value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip())


def parse(argv: list[str] | None = None) -> tuple[configuration.Config, Path | None, bool]:
    """The run settings, the Markdown path (if any) and whether to stay quiet."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark robustpool against other process pools, and its thread pools against the standard library's.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="repeats per case (default 5, 3 with --quick); tiny_imap_c1 and recovery are capped at 3, imap_memory at 1",
    )
    parser.add_argument("--cases", type=_names, default=(), help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument(
        "--peers",
        type=_names,
        default=(),
        help=f"comma-separated, from: {', '.join(PEERS)}; default: all that are installed (robustpool brings its"
        " variants robustpool-submit and robustexecutor, robustthreadpool its variant robustthreadexecutor, measured in"
        f" the calls cases only; the thread pools {', '.join(p.key for p in PEERS.values() if p.threads)} run only in"
        f" {', '.join(THREAD_CASES)})",
    )
    parser.add_argument(
        "--dask",
        action="store_true",
        help="run the Dask peers (robustpool-dask, dask: plain Dask, and serial: the serial reference) on a"
        " LocalCluster of 2 single-threaded worker processes started for the run; with --peers, those named"
        " (naming a Dask peer starts the cluster too); needs distributed (pip install 'robustpool[dask]')",
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the results as Markdown to FILE")
    parser.add_argument(
        "--quick", action="store_true", help="a ~1 minute run: a tenth of the sizes, 3 repeats, 5 s recovery limit"
    )
    parser.add_argument("--scale", type=float, help="multiply every workload size by this (default 1, or 0.1 with --quick)")
    parser.add_argument(
        "--recovery-timeout", type=float, help="seconds before a recovery run counts as a hang (default 10, 5 with --quick)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    config = configuration.quick(args.repeats) if args.quick else configuration.Config()
    config = replace(config, cases=args.cases, peers=args.peers, dask=args.dask)
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error("--repeats must be at least 1")
        config = replace(config, repeats=args.repeats)
    if args.scale is not None:
        if args.scale <= 0:
            parser.error("--scale must be positive")
        config = replace(config, scale=args.scale)
    if args.recovery_timeout is not None:
        config = replace(config, recovery_timeout=args.recovery_timeout)
    for name in args.cases:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
    return config, args.markdown, args.quiet


def main(argv: list[str] | None = None) -> int:
    """Run the harness as the command line asks; return the exit status."""
    config, markdown_path, quiet = parse(argv)
    try:
        report = run(config, progress=None if quiet else sys.stderr)
    except KeyError as exc:
        print(f"python -m benchmarks: {exc.args[0]}", file=sys.stderr)
        return 2
    if markdown_path is not None:
        markdown_path.write_text(markdown(report), encoding="utf-8")
    print(text(report))
    if markdown_path is not None:
        print(f"Markdown written to {markdown_path}")
    return 0
