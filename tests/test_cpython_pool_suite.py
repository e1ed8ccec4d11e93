"""CPython's own multiprocessing Pool tests that RobustPool passes today must keep passing.

Runs ``tools/cpython_pool_tests.py`` (CPython's ``_TestPool``, ``_TestPoolWorkerErrors``,
``_TestPoolWorkerLifetime`` in the processes flavour, and the module-level tests that build a
pool, with every Pool name pointed at RobustPool) in a subprocess, on the tests listed in
KNOWN_PASSING only: the failing ones are diagnosed in the harness's output. A test listed here
that this interpreter's test module does not have (``MiscTestCase.test_large_pool`` is new in
3.13) is not asked for.

Skipped when the interpreter ships without its ``test`` package (some distributions split
it out).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "tools" / "cpython_pool_tests.py"

# Passing on CPython 3.11.7 (28) and 3.13.0 (29, with test_large_pool), measured with the harness.
KNOWN_PASSING = frozenset(
    {
        "WithProcessesTestPool.test_apply",
        "WithProcessesTestPool.test_async",
        "WithProcessesTestPool.test_async_timeout",
        "WithProcessesTestPool.test_context",
        "WithProcessesTestPool.test_empty_iterable",
        "WithProcessesTestPool.test_enter",
        "WithProcessesTestPool.test_imap",
        "WithProcessesTestPool.test_imap_unordered",
        "WithProcessesTestPool.test_imap_unordered_handle_iterable_exception",
        "WithProcessesTestPool.test_map",
        "WithProcessesTestPool.test_map_async",
        "WithProcessesTestPool.test_map_async_callbacks",
        "WithProcessesTestPool.test_map_chunksize",
        "WithProcessesTestPool.test_map_handle_iterable_exception",
        "WithProcessesTestPool.test_map_no_failfast",
        "WithProcessesTestPool.test_map_unplicklable",
        "WithProcessesTestPool.test_release_task_refs",
        "WithProcessesTestPool.test_starmap",
        "WithProcessesTestPool.test_starmap_async",
        "WithProcessesTestPool.test_terminate",
        "WithProcessesTestPool.test_wrapped_exception",
        "WithProcessesTestPoolWorkerErrors.test_async_error_callback",
        "WithProcessesTestPoolWorkerLifetime.test_pool_maxtasksperchild_invalid",
        "WithProcessesTestPoolWorkerLifetime.test_pool_worker_lifetime_early_close",
        "WithProcessesTestPoolWorkerLifetime.test_worker_finalization_via_atexit_handler_of_multiprocessing",
        "TestStdinBadfiledescriptor.test_pool_in_process",
        "TestSyncManagerTypes.test_pool",
        "TestInitializers.test_pool_initializer",
        "MiscTestCase.test_large_pool",
    }
)
PER_TEST_TIMEOUT = 30  # seconds; the slowest of these takes about 3 s on a loaded 2-core machine
RUN_TIMEOUT = 240


def _has_cpython_tests() -> bool:
    try:
        return (
            importlib.util.find_spec("test.support") is not None
            and importlib.util.find_spec("test._test_multiprocessing") is not None
        )
    except ImportError:
        return False


def _available() -> set[str]:
    listed = subprocess.run(
        [sys.executable, str(HARNESS), "--list"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    return {line.split()[0] for line in listed if line.strip()}


@pytest.mark.timeout(300)
@pytest.mark.skipif(sys.platform == "win32", reason="the harness runs each test in its own POSIX session")
@pytest.mark.skipif(not _has_cpython_tests(), reason="this interpreter ships without CPython's test package")
def test_known_passing_cpython_pool_tests_still_pass(tmp_path: Path) -> None:
    wanted = sorted(KNOWN_PASSING & _available())
    assert len(wanted) >= 20, f"the harness found too few of the known-passing tests: {wanted}"
    report = tmp_path / "report.json"
    cmd = [sys.executable, str(HARNESS), "--pool", "robustpool", "--json", str(report), "--timeout", str(PER_TEST_TIMEOUT)]
    for test_id in wanted:
        cmd += ["--id", test_id]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    assert report.exists(), f"the harness wrote no report (exit code {run.returncode}):\n{run.stdout}\n{run.stderr}"
    results = {r["id"]: r for r in json.loads(report.read_text())["results"]}
    assert sorted(results) == wanted, run.stdout
    regressed = [f"{r['status']} {r['id']}: {r['summary']}" for r in results.values() if r["status"] != "PASS"]
    assert not regressed, "CPython Pool tests that passed before no longer do:\n" + "\n".join(regressed) + "\n\n" + run.stdout
