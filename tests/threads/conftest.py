"""Thread-pool tests also leave no thread of ours behind (the threads a test's pools started)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest


def _ours() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("robustpool-thread-")}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = _ours()
    yield
    deadline = time.monotonic() + 5.0
    while (_ours() - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = sorted(t.name for t in _ours() - before)
    assert not left, f"threads left running: {left}"
