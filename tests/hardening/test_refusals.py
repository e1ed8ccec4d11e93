"""Configuration the pool refuses at once, or accepts as meant: ``task_timeout=math.inf`` means
no limit, given to the constructor or per call; an absurd timeout (1e10, 2e9, NaN) is refused
by either, where it used to kill the worker at the deadline and respawn it forever;
``initargs`` that are not a sequence are a TypeError; and an absurd number of processes is a
ValueError at once, before any worker is started (items 1 and 14 of the hardening brief).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from robustpool import RobustPool

from ._support import _at_most_replaced, _env, _outcome, _script

# === 1. task_timeout: math.inf means no limit; absurd values are refused ==================


def test_infinite_task_timeout_means_no_limit() -> None:
    with RobustPool(1, task_timeout=math.inf) as pool:
        got = _outcome(pool.apply_async(abs, (-1,)), 10, (_at_most_replaced(pool, 0),))
        assert got == 1, repr(got)


def test_infinite_task_timeout_per_call_means_no_limit() -> None:
    with RobustPool(1) as pool:
        got = _outcome(pool.apply_async(abs, (-1,), task_timeout=math.inf), 10, (_at_most_replaced(pool, 0),))
        assert got == 1, repr(got)


@pytest.mark.parametrize("bad", [1e10, 2e9, math.nan], ids=["1e10", "2e9", "nan"])
def test_absurd_task_timeout_is_refused_by_the_constructor(bad: float) -> None:
    try:
        pool = RobustPool(1, task_timeout=bad)
    except ValueError as exc:
        if not math.isnan(bad):
            assert "math.inf" in str(exc) or "None" in str(exc), str(exc)
    else:
        pool.terminate()
        pytest.fail(f"RobustPool(task_timeout={bad!r}) was accepted")


@pytest.mark.parametrize("bad", [1e10, 2e9, math.nan], ids=["1e10", "2e9", "nan"])
def test_absurd_task_timeout_is_refused_by_the_call(bad: float) -> None:
    with RobustPool(1) as pool:
        try:
            pending = pool.apply_async(abs, (-1,), task_timeout=bad)
        except ValueError as exc:
            if not math.isnan(bad):
                assert "math.inf" in str(exc) or "None" in str(exc), str(exc)
        else:
            pool.terminate()  # today the worker dies on the deadline and is respawned forever
            pytest.fail(f"apply_async(task_timeout={bad!r}) was accepted: {pending!r}")


# === 14. smaller things: arguments refused at once ========================================


def test_initargs_that_are_not_a_sequence_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="initargs"):
        RobustPool(1, initializer=print, initargs=5)  # type: ignore[arg-type]


ABSURD_PROCESSES_OWNER = """
    import resource, time
    import robustpool._process._loop, robustpool._process._supervisor, robustpool._process._worker
    from robustpool import RobustPool
    # Few descriptors: should the pool try to start a million workers, it stops soon.
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
    t0 = time.monotonic()
    try:
        RobustPool(10**6)
    except BaseException as exc:
        print(type(exc).__name__, f"{time.monotonic() - t0:.2f}", str(exc).replace("\\n", " "), flush=True)
    else:
        print("built", flush=True)
"""


def test_an_absurd_number_of_processes_is_refused_at_once(tmp_path: Path) -> None:
    script = _script(tmp_path, "owner.py", ABSURD_PROCESSES_OWNER)
    done = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=60, check=False)
    kind, elapsed, *message = (done.stdout.split() or ["nothing", "0"]) + [""]
    assert kind == "ValueError", f"RobustPool(10**6) gave {done.stdout.strip()!r} {done.stderr[-500:]}"
    assert float(elapsed) < 2.0 and "processes" in " ".join(message), done.stdout
