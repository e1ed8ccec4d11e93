"""The Dask engine's promises beyond the crash matrix, on a real ``LocalCluster``: retries heal
a death, the cleanup contract holds over an early ``break``, a running task can be stopped,
a Dask worker killed from outside costs its tasks at most, and bad input is refused at the call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("distributed")

from robustpool import RobustExecutor, RobustPool, WorkerLostError
from robustpool.dask import DaskEngine

from . import cluster
from .tasks import die_once, sleep_then_mark, slow_square, write_file_for

WAIT = 60.0


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with cluster.started() as c:
        yield c


def test_retries_heal_a_single_death(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    with RobustPool(2, engine=DaskEngine(client), retries=1) as pool:
        pid = pool.apply_async(die_once, (str(marker),)).get(timeout=WAIT)
        assert marker.exists() and int(marker.read_text()) != pid  # a fresh process ran it again
        assert pool.stats().tasks_retried == 1
    with RobustPool(2, engine=DaskEngine(client)) as pool:  # without retries, the death is the error
        marker.unlink()
        with pytest.raises(WorkerLostError) as info:
            pool.apply_async(die_once, (str(marker),)).get(timeout=WAIT)
        assert info.value.signal is signal.SIGKILL and info.value.host in cluster.worker_addresses(client)


def test_cleanup_runs_once_for_every_result_not_taken(client: Any, tmp_path: Path) -> None:
    """A temp-file pipeline that stops early: every file it did not take is cleaned, once."""
    cleaned: list[str] = []

    def cleanup(path: str) -> None:
        cleaned.append(path)
        os.unlink(path)

    taken: list[str] = []
    with RobustPool(2, engine=DaskEngine(client), close_timeout=WAIT) as pool:
        it = pool.imap(write_file_for, ((str(tmp_path), i) for i in range(2000)), cleanup=cleanup)
        for path in it:
            taken.append(path)
            if len(taken) == 5:
                break
        it.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(Path(p).name for p in taken), f"files neither taken nor cleaned: {set(left) - set(taken)}"
    assert len(cleaned) == len(set(cleaned)), "a result was cleaned twice"
    assert not set(cleaned) & set(taken)


def test_cancelling_a_running_future_stops_it(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with RobustExecutor(2, engine=DaskEngine(client)) as ex:
        future = ex.submit(sleep_then_mark, 3.0, str(marker))
        deadline = time.monotonic() + WAIT
        while not future.running():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.5)  # it runs in its process on a Dask worker now
        assert future.cancel()
        assert ex.submit(slow_square, 3).result(timeout=WAIT) == 9
    time.sleep(3.5)
    assert not marker.exists(), "the cancelled task ran to its end"


def test_terminate_stops_running_tasks(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pool = RobustPool(2, engine=DaskEngine(client))
    try:
        result = pool.apply_async(sleep_then_mark, (3.0, str(marker)))
        time.sleep(1.0)
    finally:
        pool.terminate()
        pool.join()
    with pytest.raises(Exception, match="terminated"):
        result.get(timeout=WAIT)
    time.sleep(3.0)
    assert not marker.exists()


def test_a_dask_worker_killed_from_outside_costs_its_tasks_at_most(client: Any) -> None:
    before = cluster.worker_pids(client)
    victim_address, victim = sorted(before.items())[0]
    with RobustPool(engine=DaskEngine(client)) as pool:
        results = [pool.apply_async(slow_square, (i,)) for i in range(200)]
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)  # the node is gone, not a task's doing
        outcomes: list[Any] = []
        for r in results:
            try:
                outcomes.append(r.get(timeout=WAIT))
            except WorkerLostError as err:
                assert err.signal is None and err.pid is None, repr(err)  # the engine cannot know them
                outcomes.append(err)
        ok = [i for i, v in enumerate(outcomes) if v == i * i]
        assert len(ok) + sum(isinstance(v, WorkerLostError) for v in outcomes) == 200
        assert len(ok) >= 150, f"only {len(ok)} of 200 tasks survived one lost Dask worker"
        cluster.wait_for_workers(client)
        assert pool.map(slow_square, range(20)) == [i * i for i in range(20)]  # the pool carries on
    after = cluster.worker_pids(client)
    assert victim_address not in after or after[victim_address] != victim
    print(f"{len(ok)} of 200 succeeded; Dask workers before {sorted(before.items())}, after {sorted(after.items())}")


def test_a_dask_worker_lost_for_good_fails_its_items_naming_it() -> None:
    """With Dask's allowed-failures at 0, a chunk whose Dask worker is killed is not moved:
    its items fail with WorkerLostError, no signal or pid (unknowable), the address."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), cluster.started() as c:
        before = cluster.worker_pids(c)
        with RobustPool(engine=DaskEngine(c)) as pool:
            results = [pool.apply_async(sleep_then_mark, (3.0, os.devnull)) for _ in range(2)]
            time.sleep(1.0)  # one on each Dask worker
            address, pid = sorted(before.items())[0]
            os.kill(pid, signal.SIGKILL)
            outcomes: list[Any] = []
            for r in results:
                try:
                    outcomes.append(r.get(timeout=WAIT))
                except WorkerLostError as err:
                    outcomes.append(err)
            lost = [o for o in outcomes if isinstance(o, WorkerLostError)]
            assert len(lost) == 1 and outcomes.count(os.devnull) == 1, outcomes
            gone = lost[0]
            assert gone.host == address and gone.pid is None and gone.signal is None, repr(gone)
            assert f"a worker on {address} died" in str(gone) and "KilledWorker" in str(gone)
            cluster.wait_for_workers(c)


_OWNER = """
import sys
from distributed import Client
from robustpool import RobustPool
from robustpool.dask import DaskEngine

client = Client(sys.argv[1])
pool = RobustPool(engine=DaskEngine(client, owner_timeout=2.0))
assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
print("ready", flush=True)
sys.stdin.read()  # until killed
"""


def _pool_plugins(client: Any) -> dict[str, list[str]]:
    plugins: dict[str, list[str]] = client.run(
        lambda dask_worker: sorted(n for n in dask_worker.plugins if n.startswith("robustpool-"))
    )
    return plugins


def test_an_owner_killed_leaves_nothing_running_on_the_cluster(client: Any) -> None:
    """kill -9 of the owner: its pool's processes on the Dask workers stop once its lease
    lapses (owner_timeout), and the scheduler installs them on no worker again."""
    args = [sys.executable, "-c", _OWNER, client.scheduler.address]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as owner:
        try:
            assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
            assert all(len(names) == 1 for names in _pool_plugins(client).values())
        finally:
            owner.kill()
            owner.wait(WAIT)
    deadline = time.monotonic() + 30
    while any(_pool_plugins(client).values()):
        assert time.monotonic() < deadline, f"the dead owner's pool still runs: {_pool_plugins(client)}"
        time.sleep(0.2)
    # The conftest's leak check then finds no supervisor or worker of it under the Dask workers.


def test_bad_owner_timeout_is_refused(client: Any) -> None:
    with pytest.raises(TypeError, match="owner_timeout"):
        DaskEngine(client, owner_timeout="60")  # type: ignore[arg-type]
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="owner_timeout"):
            DaskEngine(client, owner_timeout=bad)


def test_two_pools_on_one_engine_and_the_executor(client: Any) -> None:
    engine = DaskEngine(client)
    with RobustPool(engine=engine) as pool, RobustExecutor(engine=engine) as ex:
        assert pool.processes == sum(client.nthreads().values())
        assert list(ex.map(slow_square, range(10), timeout=WAIT)) == [i * i for i in range(10)]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert pool.apply(lambda: 42) == 42  # closures and lambdas travel
        assert pool.worker_pids() == []
        with pytest.raises(ValueError, match="runs on Dask"):
            pool.supervisor_pid  # noqa: B018


def test_bad_input_is_refused_at_the_call(client: Any) -> None:
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        DaskEngine("tcp://127.0.0.1:8786")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workers must be"):
        DaskEngine(client, workers=[1, 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="resources must be"):
        DaskEngine(client, resources=["GPU"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="engine must be"):
        RobustPool(engine=client)
    with pytest.raises(ValueError, match="processes"):
        RobustPool(0, engine=DaskEngine(client))
    with pytest.raises(ValueError, match="no workers"):
        RobustPool(engine=DaskEngine(client, workers=["tcp://127.0.0.1:1"]))


def test_importing_robustpool_does_not_import_dask() -> None:
    code = "import sys, robustpool; robustpool.RobustPool; print('distributed' in sys.modules, 'dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=True)
    assert out.stdout.split() == ["False", "False"]
