"""What an owner program sees of the pool's own processes, each test running an owner script
written to ``tmp_path``: a spawned supervisor does not import modules planted in the owner's
working directory; output buffered in the owner before the pool starts is printed once, not
again by a forked process; ``python -X dev`` shows no ResourceWarning with either start
method; and Ctrl-C while a spawned supervisor boots prints at most one traceback, the
owner's, none from the supervisor (items 11, 12 and 14 of the hardening brief).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ._support import START_METHODS, _env, _script

# === 11. a spawned supervisor does not import from the owner's working directory ========

PLANTED = """
    # Planted in the owner's working directory: records that it was imported, then steps
    # aside for the real module, so the pool still works and the test sees the marker.
    import importlib, os, sys
    _here = os.path.dirname(os.path.abspath(__file__))
    open(os.path.join(_here, "imported-" + __name__), "a").close()
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)
"""

SPAWN_OWNER = """
    from robustpool import RobustPool
    with RobustPool(1, start_method="spawn") as pool:
        print(pool.apply_async(abs, (-1,)).get(timeout=20), flush=True)
"""


def test_a_spawned_supervisor_does_not_import_from_the_working_directory(tmp_path: Path) -> None:
    planted = tmp_path / "cwd"
    for name in ("json", "selectors", "mmap"):
        _script(planted, f"{name}.py", PLANTED)
    script = _script(tmp_path / "owner", "owner.py", SPAWN_OWNER)  # sys.path[0] is its own directory
    done = subprocess.run(
        [sys.executable, str(script)], cwd=planted, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    markers = sorted(p.name for p in planted.iterdir() if p.name.startswith("imported-"))
    assert markers == [], f"the supervisor imported the planted {markers} from the owner's working directory"
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr


# === 12. output buffered in the owner is printed once ===================================

PRINTING_OWNER = """
    import io, sys
    from robustpool import RobustPool
    mode = sys.argv[1]
    if mode == "stdout":
        print("hello")  # stdout is a pipe: block-buffered, not flushed
    elif mode == "stderr":
        sys.stderr.write("hello-err")  # no newline: it waits in stderr's buffer
    else:
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=False)
        sys.stderr.write("hello-err\\n")
    pool = RobustPool(2, start_method="fork")
    assert pool.map(abs, range(-10, 0)) == list(range(10, 0, -1))
    pool.close()
    pool.join()
    sys.stdout.flush()
    sys.stderr.flush()
"""


@pytest.mark.parametrize("mode", ["stdout", "stderr", "block-buffered-stderr"])
def test_output_buffered_before_the_pool_starts_is_printed_once(mode: str, tmp_path: Path) -> None:
    script = _script(tmp_path, "owner.py", PRINTING_OWNER)
    done = subprocess.run(
        [sys.executable, str(script), mode], env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    text, word = (done.stdout, "hello") if mode == "stdout" else (done.stderr, "hello-err")
    assert text.count(word) == 1, f"{word!r} printed {text.count(word)} times: {text!r}"


# === 14. smaller things: no resource warning, no supervisor traceback ====================


DEV_MODE_OWNER = """
    import os, signal, sys, time
    from robustpool import RobustPool

    def slow(x):
        time.sleep(x)
        return x

    pool = RobustPool(2, start_method=sys.argv[1])
    assert pool.map(abs, range(-20, 0)) == list(range(20, 0, -1))
    deadline = time.monotonic() + 20
    while not pool.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pool.worker_pids()[0], signal.SIGKILL)
    assert pool.apply_async(slow, (0.2,)).get(timeout=20) == 0.2
    assert pool.map(abs, range(-20, 0)) == list(range(20, 0, -1))
    it = pool.imap(abs, range(100))
    next(it)
    it.close()
    pool.close()
    pool.join()
    print("done", flush=True)
"""


@pytest.mark.parametrize("start_method", START_METHODS)
def test_dev_mode_shows_no_resource_warning(start_method: str, tmp_path: Path) -> None:
    script = _script(tmp_path, "owner.py", DEV_MODE_OWNER)
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script), start_method],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    assert "ResourceWarning" not in done.stderr and "unclosed" not in done.stderr, done.stderr


INTERRUPTED_OWNER = """
    import time
    from robustpool import RobustPool
    try:
        print("constructing", flush=True)
        pool = RobustPool(2, start_method="spawn")
        print("built", flush=True)
        pool.map(abs, range(4))
        pool.terminate()
        time.sleep(5)  # a late SIGINT lands here, not in the interpreter's shutdown
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def _interrupt_while_booting(script: Path, delay: float) -> str:
    """Run the owner; SIGINT its whole process group ``delay`` seconds after its supervisor
    process appears. Returns the owner's stderr (the supervisor's goes there too)."""
    args = [sys.executable, str(script)]
    popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    with popen as owner:
        try:
            assert owner.stdout is not None
            assert owner.stdout.readline().strip() == "constructing"
            me = psutil.Process(owner.pid)
            deadline = time.monotonic() + 10
            while not me.children() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(owner.pid, signal.SIGINT)
            _, err = owner.communicate(timeout=30)
        finally:
            owner.kill()
    return err


def test_ctrl_c_while_a_spawned_supervisor_boots_prints_no_supervisor_traceback(tmp_path: Path) -> None:
    """Ctrl-C at several moments of the supervisor's start (interpreter start-up, imports,
    setting itself up): only the owner may print a traceback, and at most one."""
    script = _script(tmp_path, "owner.py", INTERRUPTED_OWNER)
    for delay in (0.0, 0.02, 0.04, 0.06, 0.08, 0.1):
        err = _interrupt_while_booting(script, delay)
        where = f"SIGINT {delay:.2f} s after the supervisor appeared"
        assert err.count("Traceback") <= 1, f"{where}:\n{err}"
        assert "_supervisor" not in err, f"{where}:\n{err}"
        for block in err.split("Traceback (most recent call last):")[1:]:
            first_frame = block.strip().splitlines()[0]
            assert str(script) in first_frame, f"{where}, a traceback that is not the owner's:\n{err}"
