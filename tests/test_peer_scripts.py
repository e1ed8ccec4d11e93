"""The docs/peers scripts print what docs/comparison.md claims for each peer.

Each test runs one sigkill_<peer>.py script (a worker SIGKILLed while running task 7 of 20)
in a session of its own and checks the fields of its RESULT line. The third-party peers are
skipped where their library is not installed (CI installs only the [dev] extra); their
modules are never imported here, only probed for by name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

PEERS_DIR = Path(__file__).resolve().parent.parent / "docs" / "peers"


def _load_run_all() -> ModuleType:
    """docs/peers/run_all.py, which runs a script in its own session and parses its RESULT line."""
    spec = importlib.util.spec_from_file_location("peers_run_all", PEERS_DIR / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = _load_run_all()


def run_script(name: str) -> dict[str, str]:
    """Run docs/peers/<name> and return the fields of its last RESULT line (note= is the rest of the line)."""
    out, err, code, timed_out = run_all.run_in_session(PEERS_DIR / name, 90.0)
    if timed_out:
        pytest.fail(f"{name} ran past 90 s: its own deadline did not hold\n{out[-2000:]}\n{err[-2000:]}")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"{name} printed no RESULT line (exit code {code})\n{out[-2000:]}\n{err[-4000:]}"
    assert out.rstrip("\n").splitlines()[-1] == lines[-1], f"{name}: the RESULT line is not the last line"
    fields: dict[str, str] = run_all.parse(lines[-1])
    for key in ("peer", "delivered", "failed", "error", "blamed", "hung", "usable_after"):
        assert key in fields, f"{name}: no {key}= in {lines[-1]!r}"
    return fields


def counts(fields: dict[str, str]) -> tuple[int, int, int]:
    return int(fields["delivered"]), int(fields["failed"]), int(fields["blamed"])


@pytest.mark.timeout(120)
def test_robustpool_fails_only_the_killed_task_and_goes_on() -> None:
    r = run_script("sigkill_robustpool.py")
    assert (r["peer"], r["error"], r["hung"], r["usable_after"]) == ("robustpool", "WorkerLostError", "no", "yes"), r
    assert counts(r) == (19, 1, 1), r
    assert "SIGKILL" in r["note"], r


@pytest.mark.timeout(120)
def test_multiprocessing_pool_waits_forever_for_the_killed_task() -> None:
    r = run_script("sigkill_multiprocessing_pool.py")
    assert (r["peer"], r["hung"], r["error"]) == ("multiprocessing.Pool", "yes", "none"), r
    assert counts(r) == (19, 0, 0), r
    assert r["usable_after"] == "yes", r  # the pool replaced the worker; only task 7 is lost


@pytest.mark.timeout(120)
def test_process_pool_executor_breaks_and_fails_the_pending_tasks() -> None:
    r = run_script("sigkill_process_pool_executor.py")
    assert (r["peer"], r["error"], r["hung"], r["usable_after"]) == ("ProcessPoolExecutor", "BrokenProcessPool", "no", "no"), r
    delivered, failed, blamed = counts(r)
    assert blamed > 1, r
    assert delivered + failed == 20, r


@pytest.mark.timeout(120)
def test_loky_breaks_the_executor() -> None:
    pytest.importorskip("loky")
    r = run_script("sigkill_loky.py")
    assert (r["peer"], r["error"], r["hung"], r["usable_after"]) == ("loky", "TerminatedWorkerError", "no", "no"), r
    delivered, failed, blamed = counts(r)
    assert blamed > 1, r
    assert delivered + failed == 20, r
    assert "SIGKILL" in r["note"] or "terminated" in r["note"], r


@pytest.mark.timeout(120)
def test_pebble_fails_only_the_killed_task() -> None:
    pytest.importorskip("pebble")
    r = run_script("sigkill_pebble.py")
    assert (r["peer"], r["error"], r["hung"], r["usable_after"]) == ("pebble", "ProcessExpired", "no", "yes"), r
    assert counts(r) == (19, 1, 1), r


@pytest.mark.timeout(120)
def test_billiard_fails_only_the_killed_task_with_a_wrapped_worker_lost_error() -> None:
    pytest.importorskip("billiard")
    r = run_script("sigkill_billiard.py")
    assert (r["peer"], r["error"], r["hung"], r["usable_after"]) == ("billiard", "ExceptionWithTraceback", "no", "yes"), r
    assert counts(r) == (19, 1, 1), r
    assert "WorkerLostError" in r["note"], r
    assert "SIGKILL" in r["note"], r


@pytest.mark.timeout(120)
def test_mpire_fails_every_unfinished_task_and_the_pool_stops_working() -> None:
    pytest.importorskip("mpire")
    r = run_script("sigkill_mpire.py")
    assert (r["peer"], r["error"], r["hung"], r["usable_after"]) == ("mpire", "RuntimeError", "no", "no"), r
    delivered, failed, blamed = counts(r)
    assert blamed > 1, r
    assert delivered + failed == 20, r
    assert "died unexpectedly" in r["note"], r


@pytest.mark.timeout(120)
def test_aiomultiprocess_never_finishes_the_tasks_the_killed_child_held() -> None:
    pytest.importorskip("aiomultiprocess")
    r = run_script("sigkill_aiomultiprocess.py")
    assert (r["peer"], r["hung"], r["error"]) == ("aiomultiprocess", "yes", "none"), r
    delivered, failed, blamed = counts(r)
    assert (failed, blamed) == (0, 0), r
    assert delivered < 19, r  # the killed child held more tasks than the one it died in


@pytest.mark.timeout(120)
def test_dask_fails_the_killed_task_with_killed_worker_and_goes_on() -> None:
    pytest.importorskip("distributed")
    r = run_script("sigkill_dask.py")
    assert (r["peer"], r["error"], r["hung"], r["usable_after"]) == ("dask", "KilledWorker", "no", "yes"), r
    delivered, failed, blamed = counts(r)
    assert blamed >= 1, r
    assert delivered + failed == 20, r
