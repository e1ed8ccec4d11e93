"""Stateful tests: Hypothesis drives one RobustPool through random sequences of operations.

Operations: ``submit``, ``imap`` broken off early (then closed), ``imap`` closed from
another thread while its consumer waits in ``next()``, ``map_async``, collecting what is
outstanding, ``close`` (also with an ``imap`` still open, whose input ``join()`` reads),
``terminate``, killing a worker (SIGKILL from outside) and killing the supervisor. Tasks
are :func:`stress.faults.run` (real processes, real signals): some raise, some
``sys.exit``, some SIGKILL their own worker.

Invariants, checked when each sequence ends (and for ``imap`` as it goes):

* no hang: every wait is bounded;
* no loss and no duplicate: every item ends as exactly one of a value, an allowed error,
  or (for an ``imap`` closed early) a cleanup or never having run;
* no wrong value: each value is derived from its item and checked;
* cleanup exactly once: a result computed but never handed leaves its file behind unless
  ``cleanup`` removed it; only a worker that died before sending a result may leave one
  (the same rule as the chaos runner, see ``stress/runner.py``);
* no leaked process: the supervisors and workers seen are all gone afterwards;
* robustpool never logs CRITICAL (its dispatcher thread crashed).

Budget: 100 sequences of up to 15 steps (fewer where ROBUSTPOOL_STATEFUL_EXAMPLES says), fork and
spawn pools, about 20-30 s on 2 cores.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the stress package, under plain `pytest` too
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from robustpool import RobustPool
from robustpool._chaos._leaks import wait_stopped
from stress.faults import Fault, Outcome, Spec, expected_check, run, run_star
from stress.runner import allowed_outcomes

WAIT = 30.0  # bound on every wait for a result
SETTLE = 10.0  # bound on waiting for processes on their way out
FAULTS = st.sampled_from([Fault.NONE, Fault.NONE, Fault.NONE, Fault.EXCEPTION, Fault.SYS_EXIT, Fault.SIGKILL])


_CONSUMER = "imap-consumer"


def _slowly(specs: list[Spec], inside: threading.Event, pause: float) -> Iterator[Spec]:
    """An imap input that is slow to read. ``inside`` is set whenever the consumer thread
    (not the thread that built the imap) is reading it, so another thread can close the
    iterator at exactly that moment."""
    for spec in [*specs, None]:
        if threading.current_thread().name == _CONSUMER:
            inside.set()
        time.sleep(pause)
        if spec is None:
            return
        yield spec


@dataclass(eq=False)
class Item:
    token: str
    allowed: set[str]
    values: int = 0
    errors: list[str] = field(default_factory=list)
    cleaned: int = 0
    closed_early: bool = False  # belongs to an imap closed before it reached this item


@dataclass(eq=False)
class Pending:
    """An outstanding ``submit`` or ``map_async``."""

    kind: str
    items: list[Item]
    handle: Any


class _Critical(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.CRITICAL)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.getMessage()} {record.exc_info[1] if record.exc_info else ''}")


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="robustpool-stateful-"))
        self.results = self.root / "results"
        self.markers = self.root / "markers"
        self.results.mkdir()
        self.markers.mkdir()
        self.lock = threading.Lock()
        self.items: dict[str, Item] = {}
        self.pending: list[Pending] = []
        self.count = 0
        self.killed: set[int] = set()
        self.terminated = False
        self.state = "running"
        self.problems: list[str] = []
        self.critical = _Critical()
        logging.getLogger("robustpool").addHandler(self.critical)
        self.procs: dict[int, psutil.Process] = {}
        self.retries = 0

    @initialize(start_method=st.sampled_from(["fork", "fork", "spawn"]), retries=st.sampled_from([0, 0, 1]))
    def start(self, start_method: str, retries: int) -> None:
        self.retries = retries
        self.pool = RobustPool(2, start_method=start_method, retries=retries)
        self._track()

    # -- helpers --

    def _track(self) -> None:
        for pid in [self.pool.supervisor_pid, *self.pool.worker_pids()]:
            with contextlib.suppress(psutil.Error):
                self.procs.setdefault(pid, psutil.Process(pid))

    def _item(self, fault: Fault) -> Spec:
        self.count += 1
        token = f"t{self.count}"
        with self.lock:
            self.items[token] = Item(token, set(allowed_outcomes(fault, False, self.retries)))
        return Spec(token, fault.value, False, str(self.results), str(self.markers), os.getpid())

    def _outstanding(self) -> list[Item]:
        return [it for it in self.items.values() if not it.values and not it.errors and not it.cleaned]

    def _allow(self, error: str) -> None:
        """Whatever is outstanding may now also end with ``error``."""
        for it in self._outstanding():
            it.allowed.add(error)

    def cleanup(self, value: Outcome) -> None:
        with self.lock:
            self.items[value.token].cleaned += 1
        try:
            os.unlink(value.path)
        except FileNotFoundError:
            self.problems.append(f"{value.token}: cleaned, but its result file was already gone")

    def _value(self, item: Item, value: Any) -> None:
        if not isinstance(value, Outcome) or value.token != item.token or value.check != expected_check(item.token):
            self.problems.append(f"{item.token}: wrong value {value!r:.100}")
            return
        if "ok" not in item.allowed:
            self.problems.append(f"{item.token}: succeeded, allowed only {sorted(item.allowed)}")
        item.values += 1
        try:
            os.unlink(value.path)
        except FileNotFoundError:
            self.problems.append(f"{item.token}: delivered, but its result file was already gone")

    def _error(self, item: Item, exc: BaseException) -> None:
        kind = type(exc).__name__
        if kind not in item.allowed:
            self.problems.append(f"{item.token}: got {kind}, allowed {sorted(item.allowed)}: {str(exc)[:150]}")
        item.errors.append(kind)

    def _bounded(self, what: str, fn: Callable[[], object], timeout: float = WAIT) -> None:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        t.join(timeout)
        assert not t.is_alive(), f"hang: {what} did not return within {timeout:.0f} s"

    # -- rules --

    @precondition(lambda self: self.state == "running")
    @rule(fault=FAULTS)
    def submit(self, fault: Fault) -> None:
        spec = self._item(fault)
        fut = self.pool.submit(run_star, spec, len(spec.token))
        self.pending.append(Pending("submit", [self.items[spec.token]], fut))

    @precondition(lambda self: self.state == "running")
    @rule(faults=st.lists(FAULTS, max_size=6), chunksize=st.integers(1, 3))
    def map_async(self, faults: list[Fault], chunksize: int) -> None:
        specs = [self._item(f) for f in faults]
        handle = self.pool.map_async(run, specs, chunksize, cleanup=self.cleanup)
        self.pending.append(Pending("map_async", [self.items[s.token] for s in specs], handle))

    @precondition(lambda self: self.state == "running")
    @rule(faults=st.lists(FAULTS, min_size=1, max_size=8), take=st.integers(0, 8), chunksize=st.integers(1, 3))
    def imap_early_close(self, faults: list[Fault], take: int, chunksize: int) -> None:
        specs = [self._item(f) for f in faults]
        items = [self.items[s.token] for s in specs]
        it = self.pool.imap(run, specs, chunksize, cleanup=self.cleanup)
        take = min(take, len(items))
        for item in items[:take]:
            try:
                value = it.next(timeout=WAIT)
            except multiprocessing.TimeoutError:
                raise AssertionError(f"hang: imap next() for {item.token}") from None
            except StopIteration:
                raise AssertionError(f"lost: imap ended before {item.token}") from None
            except Exception as exc:
                self._error(item, exc)
            except SystemExit as exc:
                self._error(item, exc)
            else:
                self._value(item, value)
        for item in items[take:]:
            item.closed_early = True
        self._bounded("imap close()", it.close)

    # --- closing an imap from another thread (hardening brief, item 5) ---

    @precondition(lambda self: self.state == "running")
    @rule(faults=st.lists(FAULTS, min_size=1, max_size=6), when=st.sampled_from(["reading", "waiting"]))
    def imap_closed_from_another_thread(self, faults: list[Fault], when: str) -> None:
        """A consumer thread iterates an imap whose input is slow (``buffersize=1``: each
        item is read inside the consumer's next()); this thread closes the iterator while
        the consumer is inside next(), either reading the input or waiting for a result."""
        specs = [self._item(f) for f in faults]
        items = [self.items[s.token] for s in specs]
        inside = threading.Event()
        it = self.pool.imap(run, _slowly(specs, inside, 0.05), 1, cleanup=self.cleanup, buffersize=1)
        got: list[tuple[bool, Any]] = []
        stuck: list[str] = []

        def consume() -> None:
            # Until the iterator ends: after the last item, next() reads the input's end.
            for k in range(len(items) + 1):
                try:
                    got.append((True, it.next(timeout=WAIT)))
                except StopIteration:
                    return
                except multiprocessing.TimeoutError:
                    stuck.append(items[k].token if k < len(items) else "the end of the input")
                    return
                except BaseException as exc:  # an item's error, SystemExit included
                    got.append((False, exc))

        consumer = threading.Thread(target=consume, name=_CONSUMER, daemon=True)
        consumer.start()
        if when == "reading":
            assert inside.wait(WAIT), "hang: the consumer never read the imap's input"
        self._bounded("imap close() from another thread", it.close)
        consumer.join(WAIT)
        assert not consumer.is_alive() and not stuck, f"hang: imap next() after close() from another thread {stuck}"
        assert len(got) <= len(items), f"the imap yielded {len(got)} outcomes for {len(items)} items"
        for item, (ok, value) in zip(items, got, strict=False):  # the rest was closed early
            if ok:
                self._value(item, value)
            else:
                self._error(item, value)
        for item in items[len(got) :]:
            item.closed_early = True

    @precondition(lambda self: self.state == "running")
    @rule(faults=st.lists(FAULTS, min_size=3, max_size=8))
    def close_with_an_imap_open(self, faults: list[Fault]) -> None:
        """close() while an imap still has input to read (a window of 2): the consumer then
        takes every item, as ``join()`` would read what is left. A pool that miscounts its
        open imaps stops early and fails the rest with PoolTerminatedError."""
        specs = [self._item(f) for f in faults]
        items = [self.items[s.token] for s in specs]
        it = self.pool.imap(run, iter(specs), 1, cleanup=self.cleanup, buffersize=2)
        self.pool.close()
        self.state = "closed"
        time.sleep(0.2)  # the items already sent finish meanwhile; the rest must still run
        for item in items:
            try:
                value = it.next(timeout=WAIT)
            except multiprocessing.TimeoutError:
                raise AssertionError(f"hang: imap next() for {item.token} after close()") from None
            except StopIteration:
                raise AssertionError(f"lost: imap ended before {item.token} after close()") from None
            except BaseException as exc:
                self._error(item, exc)
            else:
                self._value(item, value)

    @rule()
    def collect(self) -> None:
        self._collect()

    @precondition(lambda self: self.state == "running")
    @rule()
    def close(self) -> None:
        self.pool.close()
        self.state = "closed"

    @precondition(lambda self: self.state != "terminated")
    @rule()
    def terminate(self) -> None:
        self._track()
        self._allow("PoolTerminatedError")
        self.terminated = True
        self._bounded("terminate()", self.pool.terminate)
        self.state = "terminated"

    @precondition(lambda self: self.state == "running")
    @rule(which=st.integers(0, 1))
    def kill_worker(self, which: int) -> None:
        pids = self.pool.worker_pids()
        if not pids:
            return
        self._track()
        victim = pids[which % len(pids)]
        self.killed.add(victim)
        self._allow("WorkerLostError")  # it may have been running any outstanding task
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        _wait_dead([victim])

    @precondition(lambda self: self.state == "running")
    @rule()
    def kill_supervisor(self) -> None:
        self._track()
        self._allow("WorkerLostError")
        sup = self.pool.supervisor_pid
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            # Stopped while its children are listed, so none is forked unlisted.
            os.kill(sup, signal.SIGSTOP)
            wait_stopped(sup)
            self.killed.update(self.pool.worker_pids())
            self.killed.update(p.pid for p in psutil.Process(sup).children())
            os.kill(sup, signal.SIGKILL)
        # Only what was outstanding may fail: let the kill complete (its workers die of
        # PR_SET_PDEATHSIG a moment later) before the next step submits anything.
        _wait_dead([sup, *self.killed])

    # -- checking --

    def _collect(self) -> None:
        for p in self.pending:
            if p.kind == "submit":
                (item,) = p.items
                try:
                    value = p.handle.result(timeout=WAIT)
                except concurrent.futures.TimeoutError:
                    raise AssertionError(f"hang: submit {item.token}") from None
                except BaseException as exc:
                    self._error(item, exc)
                else:
                    self._value(item, value)
                continue
            try:
                values = p.handle.get(timeout=WAIT)
            except multiprocessing.TimeoutError:
                raise AssertionError(f"hang: map_async {[i.token for i in p.items]}") from None
            except BaseException as exc:
                # The error is the outcome of the failed items; the others were cleaned.
                failed = [i for i in p.items if not i.cleaned]
                if not failed or not any(type(exc).__name__ in i.allowed for i in failed):
                    self.problems.append(f"map_async raised {type(exc).__name__}, not allowed by {[i.token for i in failed]}")
                for i in failed:
                    i.errors.append(type(exc).__name__)
            else:
                for item, value in zip(p.items, values, strict=True):
                    self._value(item, value)
        self.pending.clear()
        self._track()

    def teardown(self) -> None:
        logging.getLogger("robustpool").removeHandler(self.critical)
        if not hasattr(self, "pool"):
            shutil.rmtree(self.root, ignore_errors=True)
            return
        try:
            if self.state == "running":
                self.pool.close()
            if self.state != "terminated":
                self._bounded("close() + join()", lambda: self.pool.join(WAIT), WAIT + 5)
            self._collect()
            gc.collect()
            self._settle()
            self._no_processes_left()
            assert not self.critical.records, f"robustpool logged CRITICAL: {self.critical.records}"
            assert not self.problems, "\n".join(self.problems)
        finally:
            with contextlib.suppress(Exception):
                self.pool.terminate()
            for p in self.procs.values():
                with contextlib.suppress(psutil.Error):
                    p.kill()
            shutil.rmtree(self.root, ignore_errors=True)

    def _settle(self) -> None:
        dead = set(self.killed)
        dead.update(int(n[6:]) for n in os.listdir(self.markers) if n.startswith("dying-"))
        left: dict[str, list[int]] = {}
        for name in os.listdir(self.results):
            token, pid, _nonce = name.split("@")
            if self.terminated or int(pid) in dead:
                continue  # its worker died before sending it: an orphan, not a leak
            left.setdefault(token, []).append(int(pid))
        for item in self.items.values():
            outcomes = item.values + len(item.errors) + item.cleaned
            assert outcomes <= 1, f"duplicate: {item}"
            if item.token in left:
                raise AssertionError(f"{item} was computed by worker {left[item.token]} and never handed nor cleaned")
            if outcomes == 0 and not item.closed_early:
                raise AssertionError(f"lost: {item} has no outcome")

    def _no_processes_left(self) -> None:
        deadline = time.monotonic() + SETTLE
        alive = list(self.procs.values())
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _running(p)]
            if alive:
                time.sleep(0.05)
        assert not alive, f"processes left behind: {[(p.pid, p.name()) for p in alive]}"


def _wait_dead(pids: list[int]) -> None:
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    deadline = time.monotonic() + SETTLE
    while any(_running(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.002)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# CI's fast subset on the other Pythons asks for fewer sequences (ROBUSTPOOL_STATEFUL_EXAMPLES,
# see .ci/run): the same derandomized sequences, the first of them; the full run keeps 100.
EXAMPLES = int(os.environ.get("ROBUSTPOOL_STATEFUL_EXAMPLES", "100"))

PoolMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=15,
    deadline=None,
    database=None,
    derandomize=True,  # the same sequences on every run: a CI failure replays as is
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.timeout(150)
class TestPoolMachine(PoolMachine.TestCase):  # type: ignore[misc,valid-type]
    """The state machine as a pytest test (about 20-30 s)."""
