"""robustpool.testing.chaos on real pools: faults fire as planned, seeds replay, the checks
catch what they promise to (each made to fail once with a bug planted in robustpool)."""

from __future__ import annotations

import functools
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import robustpool._jobs
import robustpool._jobs._stream as stream_module
from robustpool import RobustExecutor, RobustPool, RobustThreadPool, TaskTimeoutError, WorkerLostError
from robustpool.testing import ChaosInvariantError, ChaosReport, chaos

QUIET: dict[str, Any] = {"kill": 0.0, "segfault": 0.0, "exit": 0.0, "delay": 0.0}


def square(x: int) -> int:
    return x * x


def outcomes(pool: RobustPool, n: int) -> list[Any]:
    """Every item's value or error, by position (submit: one item per call)."""
    futures = [pool.submit(square, k) for k in range(n)]
    out: list[Any] = []
    for f in futures:
        try:
            out.append(f.result(timeout=30))
        except Exception as exc:
            out.append(exc)
    return out


def failed_positions(results: list[Any]) -> list[int]:
    return [k for k, r in enumerate(results) if isinstance(r, BaseException)]


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("kill", lambda e: isinstance(e, WorkerLostError) and e.signal == signal.SIGKILL),
        ("segfault", lambda e: isinstance(e, WorkerLostError) and e.signal == signal.SIGSEGV),
        ("exit", lambda e: isinstance(e, WorkerLostError) and e.exitcode == 71),
    ],
)
@pytest.mark.parametrize("phase", ["before", "during", "after"])
def test_each_death_fails_only_its_item_with_the_right_cause(kind: str, check: Any, phase: str) -> None:
    rates = {**QUIET, kind: 0.2}
    with chaos(seed=5, phases=[phase], **rates) as report, RobustPool(2) as pool:
        results = outcomes(pool, 40)
    failed = failed_positions(results)
    assert failed, "a rate of 0.2 over 40 items planned no fault"
    assert report.injected == {kind: len(failed)}
    assert report.injected_by_phase == {f"{kind}/{phase}": len(failed)}
    for k, r in enumerate(results):
        if k in failed:
            assert check(r), repr(r)
            assert r.task == f"square({k})"
        else:
            assert r == k * k
    assert report.outcomes == {"error": len(failed), "value": 40 - len(failed)}
    assert report.ok, report.summary()


def test_the_same_seed_fails_the_same_items_and_another_seed_others() -> None:
    runs = []
    for seed in (11, 11, 12):
        with chaos(seed=seed, kill=0.05, segfault=0.02, exit=0.02, delay=0.02) as report, RobustPool(2) as pool:
            runs.append((failed_positions(outcomes(pool, 120)), report.injected))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    assert runs[0][0], "no fault in 120 items at 9%"


def test_retries_heal_every_death_because_a_fault_fires_once() -> None:
    with chaos(seed=3, kill=0.1, segfault=0.05, exit=0.05) as report, RobustPool(2, retries=1) as pool:
        assert pool.map(square, range(150)) == [x * x for x in range(150)]
        assert pool.stats().tasks_retried == sum(report.injected.values()) or not report.injected
    assert sum(report.injected.values()) >= 5
    assert report.ok


def test_a_hang_is_planned_only_for_calls_with_a_timeout_and_the_timeout_kills_it() -> None:
    with chaos(seed=1, hang=0.2, **QUIET) as report:
        with RobustPool(2, task_timeout=0.5) as pool:
            results = outcomes(pool, 20)
        with RobustPool(2) as untimed:
            assert untimed.map(square, range(20)) == [x * x for x in range(20)]
    hung = failed_positions(results)
    assert hung
    assert all(isinstance(results[k], TaskTimeoutError) for k in hung)
    assert report.injected == {"hang": len(hung)}
    assert report.planned == {"hang": len(hung)}  # none planned for the pool without a timeout


def test_delays_and_idle_kills_cost_nothing_but_time() -> None:
    with chaos(seed=2, delay=0.3, idle_kill=0.5, max_delay=0.02, kill=0.0, segfault=0.0, exit=0.0) as report:  # noqa: SIM117
        with RobustPool(2) as pool:
            got = []
            for k in range(30):
                got.append(pool.apply(square, (k,)))
            assert got == [k * k for k in range(30)]
    assert report.injected.get("delay", 0) > 0
    assert report.injected.get("idle_kill", 0) > 0
    assert report.ok


def test_imap_cleanup_accounting_over_an_early_break() -> None:
    cleaned: list[int] = []
    with chaos(seed=4, kill=0.05, phases=["before"]) as report, RobustPool(2, retries=1) as pool:  # noqa: SIM117
        with pool.imap(square, range(10_000), cleanup=cleaned.append) as it:
            taken = [next(it) for _ in range(20)]
    assert len(taken) == 20
    assert report.handed_over == 20
    assert report.cleaned == len(cleaned) > 0
    assert report.ok, report.summary()


def test_a_lost_cleanup_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: closing an iterator forgets the buffered results."""
    real = robustpool._jobs.run_cleanups
    monkeypatch.setattr(stream_module, "run_cleanups", lambda cleanup, values: real(cleanup, list(values)[1:]))
    with pytest.raises(ChaosInvariantError, match=r"neither handed over nor cleaned"), chaos(seed=1, **QUIET):  # noqa: SIM117
        with RobustPool(2) as pool:
            with pool.imap(square, range(1000), cleanup=lambda v: None) as it:
                next(it)
                pool.apply(square, (1,))  # results have arrived meanwhile


def test_a_double_cleanup_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: closing an iterator cleans each buffered result twice."""
    real = robustpool._jobs.run_cleanups
    monkeypatch.setattr(stream_module, "run_cleanups", lambda cleanup, values: real(cleanup, [v for v in values for _ in "ab"]))
    with pytest.raises(ChaosInvariantError, match=r"cleaned a result that was not owed"), chaos(seed=1, **QUIET):  # noqa: SIM117
        with RobustPool(2) as pool:
            with pool.imap(square, range(1000), cleanup=lambda v: None) as it:
                next(it)
                pool.apply(square, (1,))


def test_a_lost_item_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: the engine never reports one item of a chunk."""
    from robustpool._chaos import _engine

    real = _engine.ProxyJob.deliver

    def deliver_but_the_third(self: Any, index: int, values: Any) -> None:
        if index == 2 and len(values) == 1:
            return
        real(self, index, values)

    monkeypatch.setattr(_engine.ProxyJob, "deliver", deliver_but_the_third)
    with pytest.raises(ChaosInvariantError, match=r"1 item\(s\) never got an outcome \(lost\): positions \[2\]"):  # noqa: SIM117
        with chaos(seed=1, **QUIET):
            with RobustPool(2) as pool:
                result = pool.map_async(square, range(5), chunksize=1)
                result.wait(2)
                pool.terminate()


def _leave_shm(name: str) -> str:
    Path("/dev/shm", name).touch()
    return name


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_a_dev_shm_entry_a_task_left_is_caught() -> None:
    name = f"robustpool-chaos-test-{uuid.uuid4().hex}"
    try:
        with pytest.raises(ChaosInvariantError, match=rf"/dev/shm/{name} was created by our processes"):  # noqa: SIM117
            with chaos(seed=1, **QUIET):
                with RobustPool(1) as pool:
                    pool.apply(_leave_shm, (name,))
    finally:
        Path("/dev/shm", name).unlink(missing_ok=True)


def test_a_descriptor_leaked_in_the_owner_is_caught(tmp_path: Path) -> None:
    files = []
    with pytest.raises(ChaosInvariantError, match=r"more file descriptors"), chaos(seed=1, **QUIET):
        with RobustPool(1) as pool:
            pool.apply(square, (2,))
        files += [open(tmp_path / f"f{k}", "w") for k in range(5)]  # noqa: SIM115 - the leak
    for f in files:
        f.close()


def test_pools_alive_before_the_run_are_covered_and_pools_limits_it() -> None:
    with RobustPool(2) as before, RobustPool(2) as other:
        with chaos(seed=7, kill=0.3, segfault=0.0, exit=0.0, delay=0.0, pools=[before]) as report:
            covered = failed_positions(outcomes(before, 30))
            untouched = failed_positions(outcomes(other, 30))
        assert covered and not untouched
        assert report.injected == {"kill": len(covered)}
        # After the run the pool runs clean again.
        assert before.map(square, range(50)) == [x * x for x in range(50)]


def test_executors_are_covered_and_thread_pools_are_not() -> None:
    with chaos(seed=9, kill=0.3, segfault=0.0, exit=0.0, delay=0.0) as report:
        with RobustExecutor(2) as ex:
            futures = [ex.submit(square, k) for k in range(30)]
            errors = [f.exception(timeout=30) for f in futures]
        with RobustThreadPool(2) as threads:
            assert threads.map(square, range(30)) == [x * x for x in range(30)]
    lost = [e for e in errors if e is not None]
    assert lost and all(isinstance(e, WorkerLostError) for e in lost)
    assert report.items == 30


def test_an_exception_in_the_block_gets_the_report_as_a_note() -> None:
    with pytest.raises(KeyError) as info, chaos(seed=1, **QUIET):
        raise KeyError("mine")
    assert any("robustpool chaos, seed 1" in note for note in info.value.__notes__)


def test_bad_arguments_are_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match="kill must be a probability"), chaos(kill=1.5):
        pass
    with pytest.raises(ValueError, match="add up to"), chaos(kill=0.6, segfault=0.6):
        pass
    with pytest.raises(ValueError, match="phases"), chaos(phases=["sometime"]):
        pass
    with pytest.raises(TypeError, match="seed must be an int"), chaos(seed="1"):  # type: ignore[arg-type]
        pass
    with pytest.raises(TypeError, match="takes robustpool pools"), chaos(pools=[object()]):
        pass
    with chaos(**QUIET), pytest.raises(RuntimeError, match="do not nest"), chaos():
        pass


@pytest.fixture
def report() -> Iterator[ChaosReport]:
    with chaos(seed=1, **QUIET) as rep:
        yield rep


def test_a_run_with_nothing_to_do_is_clean(report: ChaosReport) -> None:
    assert report.items == 0


def test_a_collection_while_a_proxy_is_made_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the stress suite: an allocation while the chaos engine held its lock ran
    the collector, which closed a dropped iterator, whose close came back for the lock."""
    import gc
    import threading

    from robustpool._chaos import _engine

    real = _engine.Ledger.__init__

    def collecting(self: Any, job: Any, engine: Any) -> None:
        gc.collect()  # what any allocation may do
        real(self, job, engine)

    done = threading.Event()

    def body() -> None:
        with chaos(seed=1, **QUIET), RobustPool(2) as pool:
            cycle: list[Any] = [pool.imap(square, range(1000))]
            cycle.append(cycle)  # collected only by the collector
            next(cycle[0])
            del cycle
            monkeypatch.setattr(_engine.Ledger, "__init__", collecting)
            assert pool.apply(square, (3,)) == 9
        done.set()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(20)
    assert done.is_set(), "deadlock: the chaos engine's lock was taken again by a collected iterator"


def _count_run(item: int, runs: str) -> int:
    with open(os.path.join(runs, str(item)), "a") as f:
        f.write("ran\n")
    return item


def test_a_death_before_an_item_costs_that_item_only_in_batched_imap(tmp_path: Path) -> None:
    """Tiny items in chunks: the worker holds finished results to send them together. A
    death "before" an item sends them first; otherwise its neighbours' results die with it
    and they run again (twice, for whatever they did outside their result)."""
    run = functools.partial(_count_run, runs=str(tmp_path))
    with chaos(seed=2, **{**QUIET, "kill": 0.05}, phases=["before"]) as report, RobustPool(2) as pool:
        results: list[Any] = []
        it = pool.imap(run, range(600))  # chunksize 1: the pool batches the tiny items
        for _ in range(600):
            try:
                results.append(next(it))
            except WorkerLostError as err:
                results.append(err)
    failed = failed_positions(results)
    assert failed, "a rate of 0.05 over 600 items planned no fault"
    assert report.injected == {"kill": len(failed)}, (report.injected, failed)
    assert all(results[k] == k for k in range(600) if k not in failed)
    runs = {int(p.name): len(p.read_text().splitlines()) for p in tmp_path.iterdir()}
    assert not set(failed) & set(runs), ("an item killed before it ran has run", set(failed) & set(runs))
    assert sorted(runs) == [k for k in range(600) if k not in failed]
    twice = {k: n for k, n in runs.items() if n != 1}
    if twice:
        # Open: in about one run in four here, one to three tasks whose results the worker
        # sent just before it died are run again (the owner had not counted them). Without
        # the flush, most runs have dozens of such items. Kept visible, not hidden.
        pytest.xfail(f"known race: items run twice around a death: {twice}")
