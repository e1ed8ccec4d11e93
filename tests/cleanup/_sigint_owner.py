"""Owner process for ``cleanup/test_ctrl_c.py``: ``test_ctrl_c_in_the_owner_...`` (run as a script).

Usage: ``python _sigint_owner.py DIR LOG``. Runs a temp-file pipeline over slow tasks: each
task creates ``DIR/item-NNNNN`` containing ``running``, sleeps 0.2 s, rewrites it as ``done``
and returns its path. The consumer reads and deletes each file; the imap ``cleanup`` deletes
the files of results the consumer never received. Every path handed to the consumer and
every path cleaned is appended to LOG (``handed PATH`` / ``cleaned PATH``) once the file is
gone. After the first result the script prints ``started SUPERVISOR_PID WORKER_PID...``;
the test then sends SIGINT to its process group and the KeyboardInterrupt is left uncaught.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from typing import TextIO

from robustpool import RobustPool

_log: TextIO | None = None


def slow_write(directory: str, x: int) -> str:
    path = os.path.join(directory, f"item-{x:05d}")
    with open(path, "w") as f:
        f.write("running")
    time.sleep(0.2)
    with open(path, "w") as f:
        f.write("done")
    return path


def _record(kind: str, path: str) -> None:
    assert _log is not None
    _log.write(f"{kind} {path}\n")
    _log.flush()


def cleanup(path: str) -> None:
    os.unlink(path)
    _record("cleaned", path)


def main() -> None:
    global _log
    # A process started in the background by a shell without job control inherits SIGINT
    # ignored, and Python then installs no handler for it: the test would measure the
    # shell, not robustpool. Ctrl-C raises KeyboardInterrupt here whoever started us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    directory, log_path = sys.argv[1], sys.argv[2]
    _log = open(log_path, "a")  # noqa: SIM115 - kept open for the whole run on purpose
    with (
        RobustPool(2) as pool,
        pool.imap(functools.partial(slow_write, directory), range(1000), cleanup=cleanup) as it,
    ):
        for i, path in enumerate(it):
            with open(path) as f:
                f.read()
            os.unlink(path)
            _record("handed", path)
            if i == 0:
                print("started", pool.supervisor_pid, *pool.worker_pids(), flush=True)


if __name__ == "__main__":
    main()
