"""Exactly-once accounting, property-based (Hypothesis): over random input lengths, chunk and
buffer sizes, failing items, a worker killed on one item, an early stop, ordered or
unordered delivery, and a close by ``close()`` or by garbage collection, the consumer sees
the right outcomes in the right order, every result that reached the owner is handed or
cleaned exactly once (never both, never a failed item), and the input is never read more
than the window ahead of the consumer.
"""

from __future__ import annotations

import functools
import gc
import os
import shutil
import signal
import tempfile
import time
import weakref
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustpool import IMapIterator, RobustPool, WorkerLostError

from ._support import GET, _counting, _token_task, _wait_for

# --------------------------------------------------------------------------------------
# Exactly-once accounting (hypothesis)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    n: int
    chunksize: int
    buffersize: int
    fails: frozenset[int]
    kill: int | None
    stop: int | None  # how many outcomes the consumer takes; None: until StopIteration
    ordered: bool
    via_gc: bool  # drop the iterator (del + gc) instead of close()


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(0, 60))
    positions = st.integers(0, max(n - 1, 0))
    fails = draw(st.frozensets(positions, max_size=5)) if n else frozenset()
    others = sorted(set(range(n)) - fails)
    kill = draw(st.none() | st.sampled_from(others)) if others else None
    return Case(
        n=n,
        chunksize=draw(st.integers(1, 5)),
        buffersize=draw(st.integers(1, 6)),
        fails=fails,
        kill=kill,
        stop=draw(st.none() | st.integers(0, n)),
        ordered=draw(st.booleans()),
        via_gc=draw(st.booleans()),
    )


def _take(it: IMapIterator[int], stop: int | None, outcomes: list[tuple[str, int]]) -> bool:
    """Consume up to ``stop`` outcomes as ``(kind, position)``; True when exhausted. Only
    ints are kept: a stored exception's traceback would keep the iterator alive."""
    while stop is None or len(outcomes) < stop:
        try:
            token = it.next(timeout=GET)
        except StopIteration:
            return True
        except ValueError as exc:
            outcomes.append(("raised", int(exc.args[0])))
        except WorkerLostError as exc:
            assert exc.signal is signal.SIGKILL
            outcomes.append(("lost", -1 if exc.task_index is None else exc.task_index))
        else:
            outcomes.append(("ok", token))
    return False


def _check_case(pool: RobustPool, case: Case) -> None:
    marker_dir = tempfile.mkdtemp(prefix="rp-markers-")
    try:
        pulled = [0]
        handed_or_raised: list[tuple[str, int]] = []
        cleaned: list[int] = []
        mapper = functools.partial(_token_task, marker_dir, case.fails, case.kill)
        imap = pool.imap if case.ordered else pool.imap_unordered
        it = imap(mapper, _counting(pulled, range(case.n)), case.chunksize, cleanup=cleaned.append, buffersize=case.buffersize)
        exhausted = _take(it, case.stop, handed_or_raised)
        if case.via_gc:
            ref = weakref.ref(it)
            del it
            gc.collect()
            _wait_for(lambda: gc.collect() >= 0 and ref() is None, 20.0, "the dropped iterator to be collected")
        else:
            it.close()
            with pytest.raises(StopIteration):
                it.next(timeout=1.0)
            del it

        def reached() -> tuple[set[int], set[int]]:
            names = os.listdir(marker_dir)
            killers = {int(name.split("-")[1]) for name in names if name.startswith("killer-")}
            runs = [tuple(int(p) for p in name.split("-")[1:]) for name in names if name.startswith("ran-")]
            return {x for x, pid in runs if pid not in killers}, {x for x, _pid in runs}

        # A run in a worker that lived on reached the owner (close() waits for running
        # tasks). A run in the worker that was SIGKILLed later may have reached it (result
        # flushed before the kill) or not (lost and run again, or cancelled by close()).
        surely_reached, maybe_reached = reached()
        if case.via_gc:
            # Collection closes without waiting: a task that was running then has left its
            # marker but its result is still on its way, to be cleaned when it arrives.
            deadline = time.monotonic() + 10.0
            while not surely_reached <= {x for kind, x in handed_or_raised if kind == "ok"} | set(cleaned):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
                surely_reached, maybe_reached = reached()
        successful = set(range(case.n)) - case.fails - {case.kill}
        pulled_ok = successful & set(range(pulled[0]))
        handed = [x for kind, x in handed_or_raised if kind == "ok"]

        def expected(i: int) -> tuple[str, int]:
            return ("ok", i) if i in successful else ("raised", i) if i in case.fails else ("lost", i)

        # What the consumer saw is right.
        want = case.n if case.stop is None else min(case.stop, case.n)
        assert len(handed_or_raised) == want
        assert exhausted == (case.stop is None or case.stop > case.n)
        if case.ordered:
            assert handed_or_raised == [expected(i) for i in range(want)]
        else:
            assert all(outcome == expected(outcome[1]) for outcome in handed_or_raised), handed_or_raised
            assert len({i for _, i in handed_or_raised}) == want
        # Exactly once, and only for results the consumer never got.
        assert len(handed) == len(set(handed)), f"a result handed twice: {handed}"
        assert len(cleaned) == len(set(cleaned)), f"a result cleaned twice: {sorted(cleaned)}"
        assert not set(handed) & set(cleaned), f"cleaned although handed: {set(handed) & set(cleaned)}"
        assert set(cleaned) <= successful, f"cleanup got a failed item: {set(cleaned) - successful}"
        # Every result that reached the owner was handed or cleaned, and nothing else was.
        given_out = set(handed) | set(cleaned)
        assert surely_reached <= given_out, f"reached the owner, neither handed nor cleaned: {sorted(surely_reached - given_out)}"
        assert given_out <= maybe_reached, f"handed or cleaned without a completed run: {sorted(given_out - maybe_reached)}"
        if case.via_gc:
            # A dropped iterator is collected at once and closes like close(): tasks not
            # yet started are cancelled (the contract), so only what ran is accounted for,
            # by the checks above. It never yields more than it pulled.
            assert given_out <= pulled_ok | set(cleaned)
        # Lazy input: never more than the window ahead of what the consumer took.
        assert pulled[0] <= len(handed_or_raised) + case.buffersize * case.chunksize + case.chunksize
    finally:
        shutil.rmtree(marker_dir, ignore_errors=True)


@pytest.mark.timeout(60)
def test_exactly_once_accounting() -> None:
    # One pool for every example (a module-scoped fixture would trip conftest's leak check:
    # the replacement of a SIGKILLed worker is born during a test and outlives it).
    with RobustPool(2) as pool:

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(case=cases())
        def check(case: Case) -> None:
            _check_case(pool, case)

        check()
