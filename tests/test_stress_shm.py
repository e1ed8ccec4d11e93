"""The stress runner's /dev/shm leak check counts what our processes created, nothing else.

Real processes and real POSIX semaphores, no mocks:

* the accounting (:func:`robustpool._chaos._leaks.shm_leaks` over what :class:`robustpool._chaos._leaks.ShmSampler`
  saw) flags an entry one of our processes held and left, and not one another program
  created and left, nor one that was there at the start;
* the sampler's thread, woken by inotify, sees a holder that lives less than its period;
* a short stress run passes while ``stress.shm_noise`` keeps creating (and leaving)
  ``sem.mp-*`` / ``sem.loky-*`` entries next to it, and the noise removes all of its own;
* a stress run whose task leaves a semaphore behind fails, naming the worker that held it.

Every entry a test makes carries ``rptest-<pid>`` in its name and is removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustpool._chaos._leaks import SHM_DIR, ShmSampler, shm_leaks, shm_snapshot

REPO = Path(__file__).resolve().parents[1]
TAG = f"rptest-{os.getpid()}"

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.path.isdir(SHM_DIR)), reason="needs Linux /proc and /dev/shm"
)

# Creates the semaphore argv[1] (without unlinking it), says so, holds it until stdin
# closes or argv[2] seconds pass, then exits: the entry stays behind, closed.
HOLDER = textwrap.dedent(
    """
    import _multiprocessing, select, sys
    sem = _multiprocessing.SemLock(1, 1, 1, sys.argv[1], False)
    print("ready", flush=True)
    select.select([sys.stdin], [], [], float(sys.argv[2]))
    """
)


def _holder(name: str, seconds: float = 60.0) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, name, str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    proc.communicate("", timeout=30)


@pytest.fixture
def cleanup_tagged() -> Iterator[None]:
    """Remove every /dev/shm entry a test made (their names carry TAG)."""
    yield
    for name in os.listdir(SHM_DIR):
        if TAG in name:
            path = os.path.join(SHM_DIR, name)
            with contextlib.suppress(OSError):
                if os.path.isdir(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("cleanup_tagged")
def test_accounting_counts_only_entries_our_processes_held() -> None:
    # There at the start: never counted, not even under robustpool's own prefix.
    Path(SHM_DIR, f"robustpool-{TAG}-old").touch()
    before = shm_snapshot()
    ours = _holder(f"/mp-{TAG}-ours")  # "our" process: the sampler's owner
    other = _holder(f"/mp-{TAG}-other")  # another program: no descendant of the owner
    sampler = ShmSampler(owner=ours.pid)
    sampler.sample()
    _release(ours)
    _release(other)
    # Left by name: a robustpool-named file counts even if nobody was seen holding it; a
    # directory does not (another stress run's temp dir may live in /dev/shm).
    Path(SHM_DIR, f"robustpool-{TAG}-new").touch()
    Path(SHM_DIR, f"robustpool-{TAG}-dir").mkdir()
    after = shm_snapshot()
    assert {f"sem.mp-{TAG}-ours", f"sem.mp-{TAG}-other"} <= after.keys()  # both closed, not unlinked

    leaks = shm_leaks(before, after, sampler.held)

    assert leaks == sorted([f"sem.mp-{TAG}-ours", f"robustpool-{TAG}-new"])
    # Attributed by inode: the creator maps the semaphore under glibc's temporary name.
    pid, path = sampler.held[after[f"sem.mp-{TAG}-ours"].key]
    assert pid == ours.pid
    assert path.startswith(f"{SHM_DIR}/sem.")


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("cleanup_tagged")
def test_sampler_thread_sees_a_holder_shorter_than_its_period() -> None:
    before = shm_snapshot()
    sampler = ShmSampler(owner=os.getpid(), period=30.0)  # no periodic tick during the test
    sampler.start(before)
    try:
        if not sampler.inotify:
            pytest.skip("no inotify here: only the periodic tick would see it")
        proc = _holder(f"/mp-{TAG}-brief", seconds=1.0)  # exits after 1 s by itself
        proc.wait(30)
        for pipe in (proc.stdin, proc.stdout):
            assert pipe is not None
            pipe.close()
    finally:
        sampler.stop()
    assert shm_leaks(before, shm_snapshot(), sampler.held) == [f"sem.mp-{TAG}-brief"]
    assert sampler.triggered >= 1


def _run_stress(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("cleanup_tagged")
def test_stress_run_passes_next_to_other_programs_semaphores() -> None:
    foreign = Path(SHM_DIR, f"sem.mp-{TAG}-foreign")  # made by somebody else: the noise must not touch it
    foreign.touch()
    noise = subprocess.Popen(
        [sys.executable, "-m", "stress.shm_noise", "--seconds", "150", "--rate", "40", "--seed", "3"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert noise.stdout is not None
        assert noise.stdout.readline().startswith("shm_noise: running")
        time.sleep(0.5)  # some entries already left behind when the run starts, more during it
        proc = _run_stress([sys.executable, "-m", "stress", "--seconds", "4", "--seed", "20240611"], timeout=150)
        noise_pid = f"sem.loky-{noise.pid}-"
        left_by_noise = [n for n in os.listdir(SHM_DIR) if n.startswith(noise_pid)]
    finally:
        noise.terminate()
        _out, err = noise.communicate(timeout=30)
    report = proc.stdout
    lines = set(report.splitlines())
    assert left_by_noise, "the noise left nothing behind: this test proves nothing"
    assert "shm entries left 0" in lines, report
    assert proc.returncode == 0 and "RESULT OK" in lines, f"{report}\n{proc.stderr[-3000:]}"
    # The noise removed everything it made, and nothing else.
    assert noise.returncode == 0, err
    assert not [n for n in os.listdir(SHM_DIR) if n.startswith(noise_pid)]
    made, unlinked, gone = (int(x) for x in re.search(r"made (\d+) .* unlinked (\d+), (\d+) already gone", err).groups())  # type: ignore[union-attr]
    assert made == unlinked and gone == 0, err
    assert foreign.exists()


# A stress run whose task (the first item of each job of phase 0 without a fault) creates
# a semaphore and keeps it until its worker exits, never unlinking it: the kind of leak the
# check is there for. It holds on for 0.2 s before going on, so that the sampler's look,
# which its CPU budget may delay, comes before anything can kill that worker.
LEAKY_RUN = textwrap.dedent(
    """
    import os, sys, time
    import stress.__main__ as cli
    import stress.runner as runner

    TAG = sys.argv[1]  # a global: cloudpickle takes it along with leaky() to the workers
    plain = runner.run

    def leaky(spec):
        if spec.token.startswith("s5p0j") and spec.token.endswith("i0") and spec.fault == "none":
            import _multiprocessing
            sem = _multiprocessing.SemLock(1, 1, 1, f"/mp-{TAG}-{spec.token}-{os.getpid()}", False)
            sys.__dict__.setdefault("_held", []).append(sem)
            time.sleep(0.2)
        return plain(spec)

    runner.run = leaky
    sys.exit(cli.main(sys.argv[2:]))
    """
)


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("cleanup_tagged")
def test_stress_run_fails_when_our_task_leaves_a_semaphore(tmp_path: Path) -> None:
    script = tmp_path / "leaky_run.py"
    script.write_text(LEAKY_RUN)
    # No chaos that kills a worker in the middle of its task (the idle kill comes after).
    proc = _run_stress(
        [sys.executable, str(script), TAG, "--seconds", "3", "--seed", "5", "--exclude", "supervisor_kill,terminate"], 150
    )
    report = proc.stdout
    leaked = [n for n in os.listdir(SHM_DIR) if n.startswith(f"sem.mp-{TAG}-")]
    assert leaked, f"the task leaked nothing: this test proves nothing\n{report}\n{proc.stderr[-3000:]}"
    counted = next(int(x.split()[-1]) for x in report.splitlines() if x.startswith("shm entries left "))
    assert counted == len(leaked), report
    assert proc.returncode == 1 and "RESULT FAILED" in report, report
    for name in leaked:
        assert re.search(rf"{re.escape(name)} \(held by pid \d+ as {SHM_DIR}/sem\.", report), report
