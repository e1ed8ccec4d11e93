"""A description of the machine and software a run measured."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

from .peers import PeerSpec


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def describe(peers: list[PeerSpec]) -> dict[str, str]:
    """CPU count and model, load, Python, the default start method and every peer's version."""
    import multiprocessing

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    info = {
        "cpus": f"{os.cpu_count()} ({usable} usable)",
        "cpu model": _cpu_model(),
        "load average (1/5/15 min, at start)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "multiprocessing default start method": multiprocessing.get_all_start_methods()[0],
    }
    reported: set[str] = set()
    for spec in peers:
        # A variant is the same package as its peer; so is a second pool of one distribution
        # (robustpool's thread pools): its version is given once, under the first peer's label.
        if spec.variant_of is None and (spec.distribution is None or spec.distribution not in reported):
            info[spec.label] = spec.version()
            if spec.distribution is not None:
                reported.add(spec.distribution)
    for dist in ("cloudpickle", "tblib", "psutil"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return info
