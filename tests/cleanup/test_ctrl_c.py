"""Ctrl-C in the owner leaves no process and no delivered file behind. The owner is
``_sigint_owner.py``, run as a script in a session of its own and interrupted with SIGINT to
its process group while it consumes a temp-file pipeline: it must exit promptly with one
traceback, leave no process of its session alive, and every path that reached it must have
been handed to the consumer or cleaned, exactly once, and deleted.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ._support import _wait_for

SIGINT_OWNER = Path(__file__).resolve().parent / "_sigint_owner.py"


# --------------------------------------------------------------------------------------
# Ctrl-C in the owner
# --------------------------------------------------------------------------------------


def _session_members(sid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p)
    return members


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_ctrl_c_in_the_owner_leaves_no_process_and_no_delivered_file(tmp_path: Path) -> None:
    """Strict file assertion: every file whose path reached the owner is gone -- the
    consumer deleted the handed ones, ``cleanup`` the rest (each path once, never both).
    The files of tasks that were still running may remain only if unfinished ("running"):
    a "done" file means its task returned, and since close() waits for running tasks, that
    result reached the owner, so it must have been handed or cleaned."""
    work = tmp_path / "files"
    work.mkdir()
    log_path = tmp_path / "log.txt"
    owner = subprocess.Popen(
        [sys.executable, str(SIGINT_OWNER), str(work), str(log_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sid = owner.pid
    try:
        assert owner.stdout is not None and owner.stderr is not None
        ready, _, _ = select.select([owner.stdout], [], [], 30.0)
        assert ready, "the owner never printed 'started'"
        line = owner.stdout.readline().split()
        assert line and line[0] == "started", line
        pids = [int(p) for p in line[1:]]
        assert len(pids) >= 2  # the supervisor and at least one worker
        time.sleep(0.05)  # let the owner block in next() again
        os.killpg(sid, signal.SIGINT)
        signalled = time.monotonic()
        owner.wait(timeout=10.0)
        elapsed = time.monotonic() - signalled
        _wait_for(lambda: not _session_members(sid), 5.0, "the owner's session to be empty")
        assert not [p for p in pids if _alive(p)]
        stderr = owner.stderr.read()
    finally:
        for p in _session_members(sid):
            with contextlib.suppress(psutil.Error):
                p.kill()
        if owner.poll() is None:
            owner.kill()
            owner.wait(5.0)
        for pipe in (owner.stdout, owner.stderr):
            if pipe is not None:
                pipe.close()
    assert elapsed < 4.0, f"the owner took {elapsed:.1f} s to exit after SIGINT"
    assert owner.returncode == -signal.SIGINT, (owner.returncode, stderr)
    assert stderr.count("Traceback (most recent call last)") == 1, stderr
    assert "KeyboardInterrupt" in stderr, stderr

    entries = [line.split(" ", 1) for line in log_path.read_text().splitlines()]
    handed = [path for kind, path in entries if kind == "handed"]
    cleaned = [path for kind, path in entries if kind == "cleaned"]
    assert handed, "nothing was handed before the interrupt"
    assert len(handed) == len(set(handed)) and len(cleaned) == len(set(cleaned))
    assert not set(handed) & set(cleaned)
    assert not [p for p in handed + cleaned if os.path.exists(p)]
    finished = [name for name in os.listdir(work) if (work / name).read_text() == "done"]
    assert finished == [], f"results that reached the owner were neither handed nor cleaned: {finished}"
