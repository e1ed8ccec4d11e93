"""A program a task starts inherits none of robustpool's sockets: a worker's data socket is
close-on-exec, so even ``close_fds=False`` (or ``os.system``) passes it nowhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robustpool import RobustPool

_LIST_SOCKETS = """
import os
found = []
for fd in os.listdir("/proc/self/fd"):
    try:
        if os.readlink("/proc/self/fd/" + fd).startswith("socket:"):
            found.append(int(fd))
    except OSError:  # the descriptor listdir itself used
        pass
print(found)
"""


def sockets_a_child_inherits() -> str:
    done = subprocess.run([sys.executable, "-c", _LIST_SOCKETS], close_fds=False, capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_tasks_subprocess_inherits_no_socket(start_method: str) -> None:
    with RobustPool(1, start_method=start_method) as pool:
        assert pool.apply(sockets_a_child_inherits) == "[]"
