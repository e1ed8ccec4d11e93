"""Processes that could outlive the pool, and owners that fork: grandchildren that a task
starts in a session of their own die with the pool, whether it is closed, terminated, or its
owner is killed with ``kill -9``; a child forked by the owner does not keep a killed owner's
pool alive, and cannot use its parent's pool (its calls raise RuntimeError or return at once,
never hang) while the parent's pool works on (items 6 and 7 of the hardening brief). Every
process a test sees is killed afterwards by its psutil handle, even on failure: an owner
killed with ``kill -9`` leaves its processes outside this test's process tree, where the
conftest check cannot see them.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from robustpool import RobustPool

from ._support import _env, _script, _start_grandchildren, _wait_for_file

# --- the processes a test saw: wait for them to be gone, kill what is left ----------------


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for every process to be gone; returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not _gone(p)]
    return alive


def _describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.Error:
            out.append(str(p.pid))
    return out


def _kill_all(procs: list[psutil.Process]) -> None:
    """Kill leftovers by their psutil handle (which refuses a reused pid)."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _processes(pids: list[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    return procs


# === 6. grandchildren in a session of their own do not escape the pool ==================


def _grandchild_processes(directory: Path, sh: int) -> list[psutil.Process]:
    a = int(_wait_for_file(directory / "a.pid", 10))
    b = int(_wait_for_file(directory / "b.pid", 10))
    procs = _processes([sh, a, b])
    assert len(procs) == 3 and not any(_gone(p) for p in procs), _describe(procs)
    return procs


@pytest.mark.parametrize("how", ["close-join", "terminate"])
def test_grandchildren_in_their_own_session_die_with_the_pool(how: str, tmp_path: Path) -> None:
    procs: list[psutil.Process] = []
    pool = RobustPool(1)
    try:
        sh = pool.apply_async(_start_grandchildren, (str(tmp_path),)).get(timeout=20)
        procs = _grandchild_processes(tmp_path, sh)
        if how == "close-join":
            pool.close()
            pool.join(timeout=20)
        else:
            pool.terminate()
        alive = _wait_gone(procs, 5)
        assert not alive, f"escaped the pool: {_describe(alive)}"
    finally:
        pool.terminate()
        _kill_all(procs)


GRANDCHILD_OWNER = """
    import os, sys, time
    from robustpool import RobustPool
    sys.path.insert(0, os.path.dirname(sys.argv[2]))  # argv[2] is tests/hardening: tests/ holds the package
    from hardening._support import _start_grandchildren
    pool = RobustPool(1)
    sh = pool.apply(_start_grandchildren, (sys.argv[1],))
    deadline = time.monotonic() + 20
    while not pool.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready", pool.supervisor_pid, *pool.worker_pids(), sh, flush=True)
    time.sleep(60)
"""


def test_grandchildren_in_their_own_session_die_with_a_killed_owner(tmp_path: Path) -> None:
    script = _script(tmp_path / "owner", "owner.py", GRANDCHILD_OWNER)
    procs: list[psutil.Process] = []
    args = [sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=_env()) as owner:
        try:
            assert owner.stdout is not None
            word, *pids = owner.stdout.readline().split()
            assert word == "ready", word
            procs = _processes([int(p) for p in pids[:-1]]) + _grandchild_processes(tmp_path, int(pids[-1]))
            owner.kill()
            owner.wait(timeout=10)
            alive = _wait_gone(procs, 5)
            assert not alive, f"outlived their owner's kill -9: {_describe(alive)}"
        finally:
            owner.kill()
            _kill_all(procs)


# === 7. a forked owner ===================================================================


FORKING_OWNER = """
    import os, sys, time
    from robustpool import RobustPool
    pool = RobustPool(2)
    assert pool.map(abs, range(-10, 0)) == list(range(10, 0, -1))
    deadline = time.monotonic() + 20
    while len(pool.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = [pool.supervisor_pid, *pool.worker_pids()]
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    print(child, *pids, flush=True)
    time.sleep(60)
"""


def test_a_forked_child_does_not_keep_a_killed_owners_pool_alive(tmp_path: Path) -> None:
    script = _script(tmp_path, "owner.py", FORKING_OWNER)
    child: list[psutil.Process] = []
    procs: list[psutil.Process] = []
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=_env()) as owner:
        try:
            assert owner.stdout is not None
            child_pid, *pids = (int(p) for p in owner.stdout.readline().split())
            child, procs = _processes([child_pid]), _processes(pids)
            assert len(procs) == 3, pids
            owner.kill()
            owner.wait(timeout=10)
            alive = _wait_gone(procs, 5)
            assert child and not _gone(child[0]), "the forked child should still be sleeping"
            assert not alive, f"the pool outlived its killed owner while a forked child lives: {_describe(alive)}"
        finally:
            owner.kill()
            _kill_all(child + procs)


FORKED_CHILD_USES_POOL = """
    import os, sys, time, threading
    from robustpool import RobustPool

    def bounded(what, fn, timeout):
        box = []
        def run():
            t0 = time.monotonic()
            try:
                fn()
                box.append(f"{what} returned")
            except BaseException as exc:
                box.append(f"{what} raised {type(exc).__name__}")
            box[-1] += f" {time.monotonic() - t0:.2f}"
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(timeout)
        print(box[0] if box else f"{what} hung {timeout:.2f}", flush=True)

    pool = RobustPool(2)
    assert pool.map(abs, range(-10, 0)) == list(range(10, 0, -1))
    child = os.fork()
    if child == 0:
        print("child", os.getpid(), flush=True)
        bounded("map", lambda: pool.map(abs, [1]), 3)
        bounded("apply_async", lambda: pool.apply_async(abs, (1,)), 3)
        bounded("close", pool.close, 3)
        bounded("terminate", pool.terminate, 3)
        os._exit(0)
    os.waitpid(child, 0)
    print("parent map", pool.map_async(abs, [-7]).get(timeout=20), flush=True)
    pool.terminate()
"""


def test_a_forked_child_cannot_use_its_parents_pool(tmp_path: Path) -> None:
    script = _script(tmp_path, "owner.py", FORKED_CHILD_USES_POOL)
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=_env()) as owner:
        child: list[psutil.Process] = []
        try:
            out, _ = owner.communicate(timeout=40)
        finally:
            owner.kill()
        for line in out.splitlines():
            if line.startswith("child "):
                child = _processes([int(line.split()[1])])
        _kill_all(child)
    outcomes = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    assert outcomes.get("map", [])[1:3] == ["raised", "RuntimeError"], out
    assert float(outcomes["map"][3]) < 2.0, out
    for what in ("apply_async", "close", "terminate"):
        assert what in outcomes and outcomes[what][1] != "hung", out
        assert outcomes[what][1] == "returned" or outcomes[what][2] == "RuntimeError", out
    assert "parent map [7]" in out, out
