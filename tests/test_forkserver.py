"""The forkserver: in an owner that runs threads, supervisors are forks of one clean process.

Each test runs an owner script in a fresh interpreter (so the forkserver it sees is its own,
started by the pools of that script) and checks what the issue asks of the forkserver path:
the same guarantees as a fresh supervisor (threads are safe, no orphan after the owner's
``kill -9``, nothing from the working directory imported, ``__main__`` functions work) and
the owner's state as of each pool, not as of the forkserver's start (working directory,
environment, ``sys.path``, stdout/stderr).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from robustpool import RobustPool
from robustpool._chaos._leaks import alive

REPO = Path(__file__).resolve().parent.parent

# The owner scripts run a thread before their first pool: with it, a default pool takes the
# forkserver. Each runs twice: with the thread started before robustpool's import (the
# forkserver is then a fresh interpreter, started by the first pool) and after it (the
# forkserver is then the zygote, forked at the import: see robustpool._zygote).
THREAD = "threading.Thread(target=time.sleep, args=(120,), daemon=True).start()\n"
IMPORT = "from robustpool import RobustPool\nfrom robustpool._process import _forkserver\n"
PRELUDES = {
    "fresh": "import json, os, sys, threading, time\n" + THREAD + IMPORT,
    "zygote": "import json, os, sys, threading, time\n" + IMPORT + THREAD,
}
HELPERS = """
def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
"""


@pytest.fixture(params=sorted(PRELUDES))
def prelude(request: pytest.FixtureRequest) -> str:
    return PRELUDES[request.param] + HELPERS + f"KIND = {request.param!r}\n"


def _run(tmp_path: Path, prelude: str, body: str, *, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "owner.py"
    script.write_text(prelude + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, env=env, **kw)
    assert done.returncode == 0, f"owner exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _last_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pools_of_a_threaded_owner_are_forks_of_one_forkserver(tmp_path: Path, prelude: str) -> None:
    done = _run(
        tmp_path,
        prelude,
        """
        out = []
        for _ in range(3):
            with RobustPool(2) as pool:
                assert pool.map(abs, range(-20, 0)) == list(range(20, 0, -1))
                out.append((pool.supervisor_pid, parent_of(pool.supervisor_pid), _forkserver.server_pid()))
        server = _forkserver.server_pid()
        print(json.dumps({
            "pools": out, "owner": os.getpid(), "server_parent": parent_of(server),
            "owner_cmdline": open("/proc/self/cmdline").read(),
            "server_cmdline": open(f"/proc/{server}/cmdline").read(), "kind": KIND,
        }))
        """,
    )
    got = _last_json(done)
    servers = {server for _, _, server in got["pools"]}
    assert len(servers) == 1 and None not in servers  # one forkserver, for every pool
    (server,) = servers
    assert all(parent == server for _, parent, _ in got["pools"])  # each supervisor is its child
    assert len({sup for sup, _, _ in got["pools"]}) == 3
    assert server != got["owner"]
    # What the forkserver is, a child of the owner either way: a fresh interpreter (-P -c ...),
    # or the zygote, a fork of the owner (with its command line).
    assert got["server_parent"] == got["owner"]
    assert (got["server_cmdline"] == got["owner_cmdline"]) is (got["kind"] == "zygote")


@pytest.mark.parametrize("setting", ["", "0"])
def test_the_zygote_is_forked_at_import_unless_robustpool_zygote_is_0(tmp_path: Path, setting: str) -> None:
    """Imported before any thread, robustpool forks its forkserver at once (a fork of the
    owner, ready before the first pool); with ROBUSTPOOL_ZYGOTE=0 the first threaded pool
    starts a fresh one instead."""
    start = "import json, os, sys, threading, time\n" + f"os.environ['ROBUSTPOOL_ZYGOTE'] = {setting!r}\n"
    done = _run(
        tmp_path,
        start + IMPORT + THREAD + HELPERS,
        """
        before = _forkserver.server_pid()
        with RobustPool(1) as pool:
            assert pool.apply(abs, (-2,)) == 2
            server = _forkserver.server_pid()
            same = open(f"/proc/{server}/cmdline").read() == open("/proc/self/cmdline").read()
            print(json.dumps([before, server, same, parent_of(pool.supervisor_pid)]))
        """,
    )
    before, server, same, supervisors_parent = _last_json(done)
    assert supervisors_parent == server
    if setting == "0":
        assert before is None and not same
    else:
        assert before == server and same


def test_a_supervisor_gets_the_owners_state_as_of_its_pool(tmp_path: Path, prelude: str) -> None:
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "added_later.py").write_text("WHERE = 'from a sys.path entry added after the forkserver started'\n")
    done = _run(
        tmp_path,
        prelude,
        f"""
        def probe(_):
            import added_later
            print("a worker's line on stdout", flush=True)
            print("a worker's line on stderr", file=sys.stderr, flush=True)
            return os.getcwd(), os.environ.get("ROBUSTPOOL_PROBE"), added_later.WHERE
        with RobustPool(1) as pool:  # starts the forkserver in the state of now
            pool.apply(abs, (1,))
        os.chdir({str(tmp_path / "later")!r})
        os.environ["ROBUSTPOOL_PROBE"] = "set after the forkserver started"
        sys.path.append({str(tmp_path / "later")!r})
        with RobustPool(1) as pool:
            print(json.dumps(pool.apply(probe, (0,))))
        """,
    )
    cwd, probe, where = _last_json(done)
    assert cwd == str(tmp_path / "later")
    assert probe == "set after the forkserver started"
    assert where == "from a sys.path entry added after the forkserver started"
    assert "a worker's line on stdout" in done.stdout and "a worker's line on stderr" in done.stderr


def test_the_forkserver_follows_the_owners_current_stdout(tmp_path: Path, prelude: str) -> None:
    """The owner's fd 1 as of the pool, not as of the forkserver (pytest's capture, say)."""
    done = _run(
        tmp_path,
        prelude,
        f"""
        with RobustPool(1) as pool:
            pool.apply(abs, (1,))
        with open({str(tmp_path / "redirected.txt")!r}, "w") as f:
            saved = os.dup(1)
            os.dup2(f.fileno(), 1)
            try:
                with RobustPool(1) as pool:
                    pool.apply(os.write, (1, b"a worker wrote this into the redirected stdout\\n"))
            finally:
                os.dup2(saved, 1)
        print("done")
        """,
    )
    assert (tmp_path / "redirected.txt").read_text() == "a worker wrote this into the redirected stdout\n"
    (tmp_path / "redirected.txt").unlink()
    assert "wrote this" not in done.stdout


def test_main_functions_and_lambdas_run_in_forkserver_pools(tmp_path: Path, prelude: str) -> None:
    done = _run(
        tmp_path,
        prelude,
        """
        def triple(x):
            return 3 * x
        if __name__ == "__main__":
            with RobustPool(2) as pool:
                print(json.dumps([pool.map(triple, range(5)), pool.apply(lambda: "λ")]))
        """,
    )
    assert _last_json(done) == [[0, 3, 6, 9, 12], "λ"]


@pytest.mark.parametrize("first", ["thread", "import"])
def test_the_forkserver_imports_nothing_from_the_working_directory(tmp_path: Path, first: str) -> None:
    (tmp_path / "json.py").write_text("raise SystemExit('a planted json.py ran')\n")
    (tmp_path / "pickle.py").write_text("raise SystemExit('a planted pickle.py ran')\n")
    script = tmp_path / "owner.py"
    lines = ["threading.Thread(target=time.sleep, args=(60,), daemon=True).start()", "from robustpool import RobustPool"]
    script.write_text(
        "import threading, time\n"
        + "\n".join(lines if first == "thread" else lines[::-1])
        + "\nwith RobustPool(1) as pool:\n    print(pool.apply(abs, (-5,)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # -I keeps the owner itself from importing the planted files (the script's directory);
    # the forkserver runs with -P whatever the owner's flags.
    done = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "5", done.stderr[-3000:]
    assert "planted" not in done.stderr


def test_owner_kill_9_leaves_no_forkserver_supervisor_or_worker(tmp_path: Path, prelude: str) -> None:
    script = tmp_path / "owner.py"
    script.write_text(
        prelude
        + textwrap.dedent(
            """
            pool = RobustPool(2)
            results = [pool.apply_async(time.sleep, (60,)) for _ in range(2)]
            time.sleep(0.5)
            print(_forkserver.server_pid(), pool.supervisor_pid, *pool.worker_pids(), flush=True)
            time.sleep(60)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env) as owner:
        procs: list[psutil.Process] = []
        try:
            assert owner.stdout is not None
            pids = [int(p) for p in owner.stdout.readline().split()]
            assert len(pids) == 4, pids
            procs = [psutil.Process(p) for p in pids]
            owner.send_signal(signal.SIGKILL)
            owner.wait(timeout=10)
            alive = _wait_gone(procs, 5.0)
            assert not alive, f"outlived the owner's kill -9: {[p.pid for p in alive]}"
        finally:
            owner.kill()
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.kill()


def test_a_killed_forkserver_costs_no_pool(tmp_path: Path, prelude: str) -> None:
    """A pool whose forkserver dies goes on (its supervisor does not need it), closes in
    time, and the next pool gets a new forkserver."""
    done = _run(
        tmp_path,
        prelude,
        """
        import signal
        pool = RobustPool(2)
        assert pool.map(abs, range(-10, 0)) == list(range(10, 0, -1))
        first = _forkserver.server_pid()
        os.kill(first, signal.SIGKILL)
        time.sleep(0.2)
        assert pool.map(abs, range(-10, 0)) == list(range(10, 0, -1))
        start = time.monotonic()
        pool.close(); pool.join()
        closed_in = time.monotonic() - start
        with RobustPool(2) as again:
            assert again.apply(abs, (-3,)) == 3
            second = _forkserver.server_pid()
        print(json.dumps([first, second, closed_in]))
        """,
    )
    first, second, closed_in = _last_json(done)
    assert second is not None and second != first
    assert closed_in < 5.0


def test_a_forkserver_killed_between_pools_is_replaced_at_the_next_pool(tmp_path: Path, prelude: str) -> None:
    """Nothing used the dead forkserver after its death (no pool ran): the next pool's
    request finds its socket broken, and a new forkserver takes the request."""
    done = _run(
        tmp_path,
        prelude,
        """
        import signal
        with RobustPool(1) as pool:
            pool.apply(abs, (1,))
        first = _forkserver.server_pid()
        os.kill(first, signal.SIGKILL)
        time.sleep(0.2)
        with RobustPool(1) as pool:
            value = pool.apply(abs, (-4,))
            second = _forkserver.server_pid()
        print(json.dumps([first, second, value]))
        """,
    )
    first, second, value = _last_json(done)
    assert value == 4 and second not in (None, first)


def test_a_child_forked_by_the_owner_gets_a_forkserver_of_its_own(tmp_path: Path, prelude: str) -> None:
    done = _run(
        tmp_path,
        prelude,
        """
        with RobustPool(1) as pool:
            pool.apply(abs, (1,))
        parents = _forkserver.server_pid()
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                with RobustPool(1, start_method="forkserver") as pool:
                    os.write(w, json.dumps([pool.apply(abs, (-7,)), _forkserver.server_pid()]).encode())
            finally:
                os._exit(0)
        os.close(w)
        got = json.loads(os.read(r, 1000))
        os.waitpid(child, 0)
        with RobustPool(1) as pool:  # the parent's forkserver still serves the parent
            assert pool.apply(abs, (-2,)) == 2
            assert _forkserver.server_pid() == parents
        print(json.dumps([parents, got]))
        """,
    )
    parents, (value, childs) = _last_json(done)
    assert value == 7 and childs not in (None, parents)


def test_a_supervisor_killed_under_the_forkserver_is_reported_with_its_signal(caplog: pytest.LogCaptureFixture) -> None:
    """Here in the test process (pytest's watchdog thread makes it a threaded owner): the
    forkserver reaps the supervisor and the pool names the signal from its report."""
    with RobustPool(2, start_method="forkserver") as pool:
        assert pool.apply(abs, (-1,)) == 1
        old = pool.supervisor_pid
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pool.supervisor_pid == old and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.supervisor_pid != old
        assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
    assert any(f"supervisor (pid {old}) died with SIGKILL" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left
