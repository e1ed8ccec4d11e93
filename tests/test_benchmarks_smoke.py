"""Smoke test of the benchmark harness: every case runs, tiny, for robustpool and the stdlib Pool.

It checks that each case produces a successful row (so a broken case fails here), that the
stdlib Pool's recovery is reported as a hang rather than crashing the harness, that a
missing peer is skipped with a note, that robustpool's variants (its submit and
RobustExecutor) run in the calls cases only and are compared with ProcessPoolExecutor, that
the thread pools run in their cases only, ranked among themselves and compared with the
stdlib thread pools, that the Dask peers run on a LocalCluster of the run's own (and are
skipped with a note when distributed is missing), and that both renderings contain every row.
It never looks at the numbers themselves: timings on a shared machine mean nothing here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

# The benchmarks package is not installed (only robustpool is): import it from the checkout,
# also when pytest is started as `pytest` rather than `python -m pytest`.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import cli, procs  # noqa: E402
from benchmarks.cases import CASES  # noqa: E402
from benchmarks.config import Config  # noqa: E402
from benchmarks.harness import run, select_peers  # noqa: E402
from benchmarks.peers import DASK_CASES, DASK_GROUP, PEERS, ROBUSTPOOL, STDLIB, PeerSpec  # noqa: E402
from benchmarks.report import markdown, text  # noqa: E402

TINY = Config(
    repeats=2,
    peers=("robustpool", "multiprocessing", "mpire"),
    scale=0.01,
    recovery_timeout=4.0,
    case_timeout=15.0,
    memory_timeout=15.0,
)
# The cases of the pools on one machine (the others run on the Dask cluster only).
LOCAL_CASES = [name for name, case in CASES.items() if case.runs(PEERS[ROBUSTPOOL])]


def test_every_case_produces_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    real_missing = PeerSpec.missing

    def pretend_mpire_is_missing(self: PeerSpec) -> str | None:
        return "pretending it is not installed" if self.key == "mpire" else real_missing(self)

    monkeypatch.setattr(PeerSpec, "missing", pretend_mpire_is_missing)
    report = run(TINY, progress=None)

    assert any(note.startswith("mpire: skipped") for note in report.notes)
    assert {row.peer for row in report.rows} == {"robustpool", "robustpool.submit", "RobustExecutor", "mp.Pool"}
    for case in LOCAL_CASES:
        robust = report.row(case, "robustpool")
        stdlib = report.row(case, "mp.Pool")
        assert robust is not None, f"no robustpool row for {case}"
        for variant in ("robustpool.submit", "RobustExecutor"):
            row = report.row(case, variant)
            if case in ("calls", "async_calls"):
                assert row is not None and row.status == "ok", f"{case}: {variant} {row and row.status}"
            else:
                assert row is None, f"{variant} ran in {case}"
        if not CASES[case].runs(PEERS[STDLIB]):
            assert stdlib is None, f"mp.Pool ran in {case}"  # async_calls: it has no awaitable call
            assert robust.status == "ok", f"{case}: robustpool {robust.status}"
            continue
        assert stdlib is not None, f"no mp.Pool row for {case}"
        assert robust.status == "ok", f"{case}: robustpool {robust.status}"
        assert robust.median is not None and robust.median > 0
        assert len(robust.outcomes) == TINY.repeats_for(case)
        assert robust.ratio_best is not None and robust.ratio_best >= 1.0
        if case == "recovery":
            assert stdlib.status == "hang"  # the stdlib Pool never returns the killed task's result
            assert "WorkerLostError" in robust.detail
        else:
            assert stdlib.status == "ok", f"{case}: mp.Pool {stdlib.status}"
            assert robust.ratio_stdlib is not None
    memory = report.row("imap_memory", "robustpool")
    assert memory is not None and "MiB" in memory.detail

    table = text(report)
    document = markdown(report)
    for case in LOCAL_CASES:
        assert case in table
        assert f"| {case} | robustpool |" in document
    assert "## Machine" in document and "python" in document


def test_call_cases_compare_futures_with_the_executor() -> None:
    """robustpool.submit's "x stdlib" is against PPE (same API), in both calls cases."""
    config = Config(repeats=1, cases=("calls", "async_calls"), peers=("robustpool-submit", "ppe"), scale=0.01, case_timeout=15.0)
    report = run(config, progress=None)
    for case in ("calls", "async_calls"):
        submit, ppe = report.row(case, "robustpool.submit"), report.row(case, "PPE")
        assert submit is not None and ppe is not None, f"no rows for {case}"
        assert submit.status == "ok" and ppe.status == "ok", f"{case}: {submit.status}, {ppe.status}"
        assert submit.reference == "PPE" and submit.ratio_stdlib is not None and ppe.median is not None
        assert submit.ratio_stdlib == pytest.approx(ppe.median / (submit.median or 1))
        assert "µs per call" in submit.detail and "calls/s of PPE" in submit.detail
    assert report.row("tiny_map", "robustpool.submit") is None


def test_thread_pools_are_compared_with_the_stdlib_thread_pools() -> None:
    """The thread pools run in the thread cases only; "x best" ranks them among themselves, their
    "x stdlib" is against ThreadPool (TPE for the executor API, and where ThreadPool cannot
    await); robustpool's rows say how they compare with the faster stdlib thread pool; and
    closing them leaves no thread behind that would make robustpool's pool start differently."""
    cases = ("tiny_map", "tiny_imap_c1", "calls", "async_calls", "payload_1MB")
    peers = ("robustthreadpool", "threadpool", "tpe", "robustpool")
    config = Config(repeats=2, cases=cases, peers=peers, scale=0.01, case_timeout=15.0)
    report = run(config, progress=None)
    threads = {"RobustThreadPool", "RobustThreadPoolExecutor", "ThreadPool", "TPE"}

    assert not report.row("payload_1MB", "RobustThreadPool") and report.row("payload_1MB", "robustpool")
    for case in cases[:4]:
        expected = {"RobustThreadPool", "TPE"}
        if case != "async_calls":
            expected.add("ThreadPool")  # it has no awaitable call
        if case in ("calls", "async_calls"):
            expected.add("RobustThreadPoolExecutor")
        rows = [row for row in report.rows if row.case == case]
        assert {row.peer for row in rows} & threads == expected, case
        for kind in (True, False):
            ranked = [row.ratio_best for row in rows if (row.peer in threads) is kind]
            assert ranked and min(r or 0.0 for r in ranked) == pytest.approx(1.0), f"{case}: no best of its kind"
        for row in rows:
            assert row.status == "ok", f"{case}: {row.peer} {row.status}"
            if row.peer not in threads:
                continue
            twin = "TPE" if case == "async_calls" or row.peer == "RobustThreadPoolExecutor" else "ThreadPool"
            reference = report.row(case, twin)
            assert row.reference == twin and reference is not None and reference.median is not None, f"{case}: {row.peer}"
            assert row.ratio_stdlib == pytest.approx(reference.median / (row.median or 1))
            if row.peer.startswith("Robust") and case != "async_calls":
                faster = max((report.row(case, "ThreadPool"), report.row(case, "TPE")), key=lambda r: (r and r.median) or 0)
                assert faster is not None and row.rival == faster.peer, f"{case}: {row.peer} rival {row.rival}"
                assert row.ratio_rival == pytest.approx((faster.median or 0) / (row.median or 1))
                if case in ("calls", "tiny_imap_c1"):
                    assert "the faster thread peer" in row.detail, f"{case}: {row.peer} {row.detail!r}"
            else:
                assert row.rival is None and "faster thread peer" not in row.detail, f"{case}: {row.peer}"
    assert not [note for note in report.notes if "still alive" in note]
    # The owner may start with more than one thread (pytest's), but a thread pool's must not be left over.
    for note in report.notes:
        counts = re.search(r"had (\d+) threads when a pool was built \(baseline (\d+)\)", note)
        assert counts is None or counts[1] == counts[2], note
    assert any(note.startswith("thread pools (") for note in report.notes)
    assert "RobustThreadPoolExecutor" in text(report)


def test_command_line_options(tmp_path: Path) -> None:
    config, path, quiet = cli.parse(["--repeats", "4", "--cases", "startup,recovery", "--peers", "robustpool,mp", "--quiet"])
    assert config.repeats == 4 and config.cases == ("startup", "recovery") and config.peers == ("robustpool", "mp")
    assert config.repeats_for("recovery") == 3 and path is None and quiet
    config, path, _ = cli.parse(["--quick", "--markdown", str(tmp_path / "out.md")])
    assert config.scale < 1 and path == tmp_path / "out.md"
    config, _, _ = cli.parse(["--dask", "--cases", "tiny_imap_c1,cpu_1ms"])
    assert config.dask and config.peers == () and config.cases == ("tiny_imap_c1", "cpu_1ms")
    with pytest.raises(SystemExit):
        cli.parse(["--cases", "no_such_case"])


@pytest.fixture(scope="module")
def resource_tracker() -> None:
    """The owner's multiprocessing resource tracker, started before the leak check looks: a
    LocalCluster's spawned processes start it at first use, and it lives as long as pytest."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="distributed is not installed")
@pytest.mark.usefixtures("resource_tracker")
def test_dask_peers_run_on_a_cluster_of_their_own() -> None:
    """--dask: robustpool-dask and plain Dask in every Dask case, on one LocalCluster started
    for the run and gone after it; their "x stdlib" is against plain Dask, and cpu_1ms on the
    cluster is read against the serial row (cores x serial speed)."""
    before = procs.children()
    config = Config(repeats=1, dask=True, scale=0.01, case_timeout=30.0)
    report = run(config, progress=None)

    assert {row.peer for row in report.rows} == {"robustpool-dask", "dask", "serial"}
    assert {row.case for row in report.rows} == set(DASK_CASES)
    for case in DASK_CASES:
        robust, dask = report.row(case, "robustpool-dask"), report.row(case, "dask")
        assert robust is not None and dask is not None, f"no rows for {case}"
        assert robust.status == "ok" and dask.status == "ok", f"{case}: {robust.status}, {dask.status}"
        assert robust.reference == "dask" and robust.ratio_stdlib is not None, case
        assert "plain Dask" in robust.detail or "calls/s of dask" in robust.detail, f"{case}: {robust.detail!r}"
    serial = report.row("cpu_1ms", "serial")
    assert serial is not None and serial.status == "ok"
    cpu = report.row("cpu_1ms", "robustpool-dask")
    assert cpu is not None and "of cores x serial (2 x" in cpu.detail and "second half" in cpu.detail
    assert any(note.startswith("Dask: one LocalCluster for the run, 2 worker processes") for note in report.notes)
    assert any(note.startswith("robustpool-dask: its first pool on the fresh cluster") for note in report.notes)
    assert not [note for note in report.notes if "still alive" in note or "outlived" in note]
    assert procs.wait_children(before) == []  # the cluster's processes are gone with the run
    assert "robustpool-dask" in text(report) and "| roundtrip | dask |" in markdown(report)


def test_dask_peers_are_skipped_without_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without distributed, --dask runs what it can (the serial reference) and says why the Dask
    peers did not run; no cluster is started. A run without --dask never selects them."""
    real_missing = PeerSpec.missing

    def pretend_distributed_is_missing(self: PeerSpec) -> str | None:
        if self.module == "distributed":
            return "module 'distributed' is not installed (pretending)"
        return real_missing(self)

    monkeypatch.setattr(PeerSpec, "missing", pretend_distributed_is_missing)
    report = run(Config(repeats=1, dask=True, cases=("cpu_1ms",), scale=0.01), progress=None)
    assert {row.peer for row in report.rows} == {"serial"}
    assert any(note.startswith("robustpool-dask: skipped, module 'distributed'") for note in report.notes)
    assert any(note.startswith("dask: skipped") for note in report.notes)
    assert not any(note.startswith("Dask: one LocalCluster") for note in report.notes)
    monkeypatch.undo()
    assert not [spec.key for spec in select_peers((), []) if spec.group == DASK_GROUP]
