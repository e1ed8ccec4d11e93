"""Shared fixtures: every test must leave no process behind.

A test that leaks a worker or supervisor fails here, after a bounded wait for processes
that are already on their way out; the leftovers are killed so later tests start clean.
The forkserver is not a leak: one per owner process, it lives as long as the owner (pytest
runs a faulthandler watchdog thread, so default pools here start their supervisors there).

Also: the faulthandler dump of a slow test comes shortly before its own timeout (see
:func:`pytest_runtest_protocol`), not at the session-wide ``faulthandler_timeout``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

_DUMP_FD = pytest.StashKey[int]()


def _children() -> list[psutil.Process]:
    from robustpool._chaos._leaks import alive, descendants  # which leaves the forkserver out

    procs = alive(descendants(os.getpid()))
    cluster = sys.modules.get("on_dask.cluster")  # a test's Dask cluster is not a leak (see there)
    if cluster is None:
        return procs
    infrastructure = cluster.infrastructure()
    return [p for p in procs if p.pid not in infrastructure]


def pytest_sessionfinish(session: pytest.Session) -> None:
    cluster = sys.modules.get("on_dask.cluster")
    if cluster is not None:
        cluster.stop_shared()


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    before = {p.pid for p in _children()}
    yield
    deadline = time.monotonic() + 5.0
    leaked = [p for p in _children() if p.pid not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = [p for p in _children() if p.pid not in before]
    described = [_describe(p) for p in leaked]
    for p in leaked:
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not leaked, f"processes left behind: {described}"


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:120]}"
    except psutil.Error:
        return str(p.pid)


# --- the faulthandler dump follows each test's own timeout ---
#
# pytest arms faulthandler.dump_traceback_later(faulthandler_timeout) (50 s) for every test,
# 10 s before pytest-timeout's session-wide timeout (60 s) stops it: a hang shows every
# thread's stack even where the timeout's signal cannot be handled. A test marked with a
# longer timeout (the stateful test: 150 s) kept the 50 s dump, so on a loaded machine it
# passed in 50-150 s with a "Timeout (0:00:50)!" dump in the output although nothing hung.
# Such a test gets the same 10 s lead before its own timeout instead.


def pytest_configure(config: pytest.Config) -> None:
    # The real stderr, as pytest's faulthandler plugin takes it (capture is suspended here).
    config.stash[_DUMP_FD] = os.dup(sys.stderr.fileno())


def pytest_unconfigure(config: pytest.Config) -> None:
    if _DUMP_FD in config.stash:
        os.close(config.stash[_DUMP_FD])
        del config.stash[_DUMP_FD]


def _seconds(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    """Re-arm the dump for a test whose timeout marker is longer than the session's. Runs
    inside the faulthandler plugin's wrapper, which armed the session's dump before and
    cancels whichever is armed after the test's teardown."""
    marker = item.get_closest_marker("timeout")
    dump_after = _seconds(item.config.getini("faulthandler_timeout"))
    if marker is None or dump_after <= 0 or _DUMP_FD not in item.config.stash:
        return None
    own = _seconds(marker.kwargs.get("timeout", marker.args[0] if marker.args else None))
    lead = _seconds(item.config.getini("timeout")) - dump_after
    if lead > 0 and own - lead > dump_after:
        faulthandler.dump_traceback_later(own - lead, file=item.config.stash[_DUMP_FD])
    return None
