"""Shared fixtures: every test must leave no process behind.

A test that leaks a worker or supervisor fails here, after a bounded wait for processes
that are already on their way out; the leftovers are killed so later tests start clean.
The forkserver is not a leak: one per owner process, it lives as long as the owner (pytest
runs a faulthandler watchdog thread, so default pools here start their supervisors there).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psutil
import pytest


def _children() -> list[psutil.Process]:
    from robustpool._process._forkserver import server_pid

    forkserver = server_pid()
    try:
        procs = psutil.Process().children(recursive=True)
        return [p for p in procs if p.pid != forkserver and p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


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
