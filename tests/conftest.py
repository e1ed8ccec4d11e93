"""Shared fixtures: every test must leave no process behind.

A test that leaks a worker or supervisor fails here, after a bounded wait for processes
that are already on their way out; the leftovers are killed so later tests start clean.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest


def _children() -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
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
    for p in leaked:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not leaked, f"processes left behind: {[(p.pid, p.name()) for p in leaked]}"
