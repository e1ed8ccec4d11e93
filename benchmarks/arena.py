"""Where the arena starts to pay: echo throughput by payload size, arena on and off.

``python -m benchmarks.arena`` runs, for each size, ``imap(echo, payloads, 1)`` over
distinct ``bytes`` objects (so no pickle memo and no cache makes a repeat cheaper than the
first) on a warm 2-worker ``RobustPool`` (one untimed pass of the same payloads first) with
the arena as shipped and with it disabled,
alternating the two, and prints medians and their ratio. The arena is used for payloads of
``MIN_BYTES`` or more; this script sets ``MIN_BYTES`` to 0 in both the owner and the
workers (forked from it) so each size shows what the arena would do there. It is a report,
not a test: on a noisy machine read the ratios, and run it twice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from robustpool import RobustPool
from robustpool._process import _arena

from .work import echo

SIZES_KIB = "4,16,32,64,128,256,1024,8192"


def _rate(pool: RobustPool, payloads: list[bytes]) -> float:
    """MiB/s echoed (both ways counted once, as the harness's payload case does)."""
    start = time.perf_counter()
    for got, sent in zip(pool.imap(echo, payloads, 1), payloads, strict=True):
        if len(got) != len(sent):
            raise RuntimeError("echo returned different bytes")
    return sum(map(len, payloads)) / (1 << 20) / (time.perf_counter() - start)


def measure(size: int, repeats: int, budget: int) -> tuple[float, float]:
    """Median MiB/s with the arena and without it, for ``size``-byte payloads."""
    count = max(20, min(2000, budget // size))
    payloads = [os.urandom(size) for _ in range(count)]
    half, least = _arena.HALF, _arena.MIN_BYTES
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for r in range(repeats):
            for on in (True, False) if r % 2 == 0 else (False, True):
                _arena.HALF, _arena.MIN_BYTES = (half, 0) if on else (0, least)
                with RobustPool(2, start_method="fork") as pool:
                    # Warm: workers up, function cached, and the arena's pages touched
                    # once (its first use in a pool faults them in; the socket path's
                    # buffers come from malloc, already warm): steady state is compared.
                    _rate(pool, payloads)
                    rates[on].append(_rate(pool, payloads))
    finally:
        _arena.HALF, _arena.MIN_BYTES = half, least
    return statistics.median(rates[True]), statistics.median(rates[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=int, default=256 << 20, help="bytes echoed per repeat (default 256 MiB)")
    parser.add_argument("--sizes", default=SIZES_KIB, help=f"payload sizes in KiB, comma-separated (default {SIZES_KIB})")
    args = parser.parse_args()
    print(f"{'size':>8}  {'arena MiB/s':>12}  {'socket MiB/s':>12}  {'arena/socket':>12}")
    for size in (int(kib) << 10 for kib in args.sizes.split(",")):
        on, off = measure(size, args.repeats, args.budget)
        print(f"{size >> 10:>6}Ki  {on:>12,.0f}  {off:>12,.0f}  {on / off:>12.2f}")


if __name__ == "__main__":
    main()
