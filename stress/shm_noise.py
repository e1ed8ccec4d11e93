"""Imitate another program on the machine that creates POSIX semaphores in ``/dev/shm``.

``python -m stress.shm_noise --seconds 60`` runs for that long next to a stress run (or a
test) and, at ``--rate`` creations a second, makes named semaphores the way
``multiprocessing`` and loky name theirs (``/dev/shm/sem.mp-xxxxxxxx``,
``/dev/shm/sem.loky-<pid>-xxxxxxxx``). Each new one is, at random:

* *held*: kept open (mapped by this process), up to ``--hold`` at a time; the oldest is
  then closed, which leaves it behind like the next kind;
* *left*: closed at once but not unlinked, as a program that crashed or forgot to clean up
  leaves it, up to ``--leave`` at a time (the oldest is then unlinked, so the number of
  entries stays bounded);
* *transient*: unlinked right away.

It prints one ``shm_noise: running ...`` line when it has started and a summary on stderr
when it ends. On exit (the time is up, SIGTERM, SIGINT or SIGHUP) it unlinks every entry it
made and still finds there, and never touches anything else: it creates with ``O_EXCL``
(an existing name is skipped, never claimed) and unlinks a name only while it still names
the inode it created.
"""

from __future__ import annotations

import _multiprocessing
import argparse
import os
import random
import signal
import sys
import time
from collections import deque
from types import FrameType
from typing import Any

SHM = "/dev/shm"
SEMAPHORE = 1  # _multiprocessing's kind for a counting semaphore (0 is a recursive mutex)
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"  # what multiprocessing's names use


class Noise:
    """The semaphores this process made, and the three things it does with new ones."""

    def __init__(self, rng: random.Random, hold: int, leave: int) -> None:
        self.rng = rng
        self.max_hold = hold
        self.max_leave = leave
        self.made: dict[str, tuple[int, int] | None] = {}  # sem name -> (st_dev, st_ino) at creation
        self.held: deque[tuple[str, Any]] = deque()  # open semaphores (name, SemLock)
        self.left: deque[str] = deque()  # closed, not unlinked
        self.counts = {"made": 0, "held": 0, "left": 0, "transient": 0, "unlinked": 0, "skipped": 0, "gone": 0}

    def _name(self) -> str:
        rand = "".join(self.rng.choice(ALPHABET) for _ in range(8))
        return f"/mp-{rand}" if self.rng.random() < 0.6 else f"/loky-{os.getpid()}-{rand}"

    def step(self) -> None:
        name = self._name()
        try:
            sem = _multiprocessing.SemLock(SEMAPHORE, 1, 1, name, False)  # O_CREAT | O_EXCL
        except FileExistsError:
            self.counts["skipped"] += 1  # somebody else's: not ours to touch
            return
        self.made[name] = _identity(name)
        self.counts["made"] += 1
        what = self.rng.choices(["held", "left", "transient"], [3, 4, 3])[0]
        self.counts[what] += 1
        if what == "held":
            self.held.append((name, sem))
            if len(self.held) > self.max_hold:
                old, _ = self.held.popleft()  # the SemLock is closed when it is collected
                self._leave(old)
        elif what == "left":
            del sem  # sem_close(), no sem_unlink(): the entry stays
            self._leave(name)
        else:
            self._unlink(name)
            del sem

    def _leave(self, name: str) -> None:
        self.left.append(name)
        if len(self.left) > self.max_leave:
            self._unlink(self.left.popleft())

    def _unlink(self, name: str) -> None:
        identity = self.made.pop(name, None)
        if identity is not None and _identity(name) != identity:
            self.counts["gone"] += 1  # removed, or another file now has that name: leave it alone
            return
        try:
            _multiprocessing.sem_unlink(name)
        except FileNotFoundError:
            self.counts["gone"] += 1
        else:
            self.counts["unlinked"] += 1

    def cleanup(self) -> None:
        self.held.clear()
        self.left.clear()
        for name in list(self.made):
            self._unlink(name)


def _identity(name: str) -> tuple[int, int] | None:
    """The inode a semaphore name stands for (None where it has no file, e.g. macOS)."""
    try:
        st = os.stat(f"{SHM}/sem.{name.lstrip('/')}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.shm_noise", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    ap.add_argument("--rate", type=float, default=20.0, help="semaphores created per second (default 20)")
    ap.add_argument("--hold", type=int, default=4, help="at most this many held open at a time (default 4)")
    ap.add_argument("--leave", type=int, default=8, help="at most this many left closed, not unlinked (default 8)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the name and action choices")
    args = ap.parse_args(argv)
    stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    for signum in stops:
        signal.signal(signum, _stop)
    noise = Noise(random.Random(args.seed), max(args.hold, 0), max(args.leave, 0))
    deadline = time.monotonic() + args.seconds
    period = 1.0 / args.rate if args.rate > 0 else args.seconds
    try:
        print(f"shm_noise: running pid {os.getpid()} for {args.seconds:g} s", flush=True)
        while (now := time.monotonic()) < deadline:
            # A stop signal is handled between steps, never between creating a semaphore
            # and recording it (which would leave one behind that cleanup does not know).
            signal.pthread_sigmask(signal.SIG_BLOCK, stops)
            try:
                noise.step()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            time.sleep(min(period, max(deadline - now, 0.0)))
    except SystemExit:
        pass  # a stop signal: the normal way to end it early
    finally:
        # No signal may cut the cleanup short.
        for signum in stops:
            signal.signal(signum, signal.SIG_IGN)
        noise.cleanup()
        c = noise.counts
        print(
            f"shm_noise: made {c['made']} (held {c['held']}, left {c['left']}, transient {c['transient']}), "
            f"skipped {c['skipped']} existing names, unlinked {c['unlinked']}, {c['gone']} already gone",
            file=sys.stderr,
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
