"""Command line of the chaos runner: ``python -m stress --seconds 60 --seed S``.

Parses the options, prints the seed first (so any failure can be replayed), runs
:class:`stress.runner.Runner` under a watchdog, prints the report and exits 0 only when
every invariant held. The watchdog is a thread: if the run overruns its budget by 60 s it
dumps every thread's stack (``faulthandler.dump_traceback``), kills the run's child
processes and exits with status 3. A second, C-level ``faulthandler.dump_traceback_later``
backs it up in case the interpreter itself is wedged (the GIL held forever).

``--owner-child DIR`` is internal: it is how the runner starts the owner subprocess it
sends Ctrl-C to.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import random
import sys
import threading
import time

import psutil

from .faults import Fault
from .runner import EVENTS, OVERRUN, PROFILES, Options, Runner, owner_child

EXIT_FAILED = 1
EXIT_WATCHDOG = 3
#: With ``--tasks`` alone the run ends at N tasks; this caps its duration all the same.
TASKS_ONLY_BUDGET = 3600.0


class Watchdog:
    """Kills the run if it is still going ``OVERRUN`` seconds past its budget."""

    def __init__(self, budget: float, seed: int) -> None:
        self.budget = budget
        self.seed = seed
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="stress-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self.thread.start()
        # Backstop for a wedged interpreter, 30 s after the Python watchdog.
        faulthandler.dump_traceback_later(self.budget + OVERRUN + 30, exit=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        faulthandler.cancel_dump_traceback_later()

    def _watch(self) -> None:
        if self.done.wait(self.budget + OVERRUN):
            return
        print(
            f"\nWATCHDOG: the run overran its {self.budget:.0f} s budget by {OVERRUN:.0f} s "
            f"(seed {self.seed}); stacks of every thread follow",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    p.kill()
        print("RESULT FAILED (watchdog)", flush=True)
        os._exit(EXIT_WATCHDOG)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stress", description="Seeded chaos runner for robustpool.")
    ap.add_argument("--seconds", type=float, default=None, help="time budget (default 60; with --tasks alone, 3600)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the run (default: random, printed first)")
    ap.add_argument("--tasks", type=int, default=None, help="stop once this many tasks were submitted")
    ap.add_argument("--workers", type=int, default=None, help="workers per pool (default: the profile's, 2 or 16)")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="mixed", help="workload shape (default mixed)")
    ap.add_argument(
        "--exclude",
        default="",
        metavar="KIND,...",
        help="leave out these faults or chaos events, to bisect a failure "
        f"(faults: {', '.join(f.value for f in Fault if f is not Fault.NONE)}; "
        f"events: {', '.join(EVENTS)})",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="print each phase and robustpool's log")
    ap.add_argument("--owner-child", metavar="DIR", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start-method", default="fork", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.owner_child is not None:
        return owner_child(args.owner_child, args.seed or 0, args.workers or 2, args.start_method)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    seconds = args.seconds if args.seconds is not None else (TASKS_ONLY_BUDGET if args.tasks else 60.0)
    print(f"seed {seed}", flush=True)
    replay = f"python -m stress --seed {seed} --profile {args.profile} --seconds {seconds:g}"
    if args.tasks:
        replay += f" --tasks {args.tasks}"
    if args.workers:
        replay += f" --workers {args.workers}"
    exclude = frozenset(x.strip() for x in args.exclude.split(",") if x.strip())
    unknown = exclude - {f.value for f in Fault} - set(EVENTS)
    if unknown:
        print(f"unknown --exclude kinds: {sorted(unknown)}", file=sys.stderr)
        return 2
    if exclude:
        replay += f" --exclude {','.join(sorted(exclude))}"
    print(f"replay: {replay}", flush=True)
    opts = Options(seed, seconds, args.tasks, args.workers, args.profile, args.verbose, exclude)
    started = time.monotonic()
    with Watchdog(seconds, seed):
        report = Runner(opts).run()
    report.elapsed = time.monotonic() - started
    print(report.render(), flush=True)
    return 0 if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
