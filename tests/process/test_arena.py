"""The workers' arenas: large payloads through shared memory, and nothing left after a death.

``Regions`` is pure and tested alone. Everything else runs real pools and reads what the
kernel says the owner and its workers hold (``/proc/<pid>/maps`` and ``/proc/<pid>/fd``):
an arena is the worker's slot memfd, so it shows as ``/memfd:robustpool-slot``, and
nothing is ever named in ``/dev/shm``. The owner-side arena objects are read from the
dispatcher's table only to tell which path a payload took (a moment-old count is fine).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from robustpool import RobustPool, WorkerLostError
from robustpool._process import _arena
from robustpool._process._arena import PAGE, OwnerArena, Regions
from robustpool._process._wire import SLOT_PHASE, Phase
from robustpool._process._workers import WorkerHandle

pytestmark = pytest.mark.skipif(not _arena.HALF, reason="the arena needs memfd_create (Linux, 64-bit)")

WAIT = 30.0
MEMFD = "/memfd:robustpool-slot"
START_METHODS = ["fork", "spawn"]


def echo(x: Any) -> Any:
    return x


def echo_after(x: Any, seconds: float) -> Any:
    time.sleep(seconds)
    return x


def make(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"!" * (size % 256)


def pid_and_len(x: bytes) -> tuple[int, int]:
    return os.getpid(), len(x)


# --- what the kernel says -----------------------------------------------------------------


def memfd_mappings(pid: int | str = "self") -> dict[int, int]:
    """inode -> bytes mapped, of the robustpool memfds ``pid`` maps."""
    found: dict[int, int] = {}
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if MEMFD in line:
                span, _perms, _offset, _dev, inode = line.split()[:5]
                lo, hi = (int(x, 16) for x in span.split("-"))
                found[int(inode)] = found.get(int(inode), 0) + hi - lo
    return found


def memfd_fds(pid: int | str = "self") -> list[str]:
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(MEMFD):
            names.append(fd)
    return names


def handles(pool: RobustPool) -> list[WorkerHandle]:
    return list(pool._core.engine._loop._workers.values())  # type: ignore[attr-defined]


def arenas(pool: RobustPool) -> list[OwnerArena]:
    return [w.arena for w in handles(pool) if w.arena is not None]


def wait_for(what: str, check: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def settled(pool: RobustPool, n: int) -> bool:
    """``n`` workers up, and the owner maps exactly their memfds."""
    ws = handles(pool)
    return len(ws) == n and all(w.pid for w in ws) and len(memfd_mappings()) == n


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    """After each test: the owner maps no arena and holds no memfd, /dev/shm gained nothing."""
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield
    assert memfd_mappings() == {}, "the owner still maps an arena"
    assert memfd_fds() == [], "the owner still holds a memfd"
    if os.path.isdir("/dev/shm"):
        assert not {n for n in os.listdir("/dev/shm") if "robustpool" in n and n not in shm}, "a /dev/shm entry of ours appeared"


# --- Regions (pure) -----------------------------------------------------------------------


def test_regions_first_fit_page_aligned() -> None:
    r = Regions(16 * PAGE, 16 * PAGE)
    assert r.alloc(1) == 0
    assert r.alloc(PAGE + 1) == PAGE
    assert r.alloc(PAGE) == 3 * PAGE
    assert r.free(PAGE) is None
    assert r.alloc(2 * PAGE) == PAGE  # the lowest gap that fits: the same pages again
    assert r.alloc(13 * PAGE) is None  # 12 pages left
    assert r.alloc(12 * PAGE) == 4 * PAGE
    assert len(r) == 4


def test_regions_give_back_above_keep_once_unused() -> None:
    r = Regions(64 * PAGE, 8 * PAGE)
    low = r.alloc(4 * PAGE)
    high = r.alloc(20 * PAGE)
    assert low is not None and high is not None
    assert (low, high) == (0, 4 * PAGE)
    assert r.free(low) is None  # the region above keep is still in use
    assert r.free(high) == (8 * PAGE, 16 * PAGE)  # pages 8..24 were written, none in use now
    assert r.alloc(PAGE) == 0
    assert r.free(0) is None  # nothing above keep was written since
    with pytest.raises(ValueError, match="no region in use"):
        r.free(0)


# --- payloads through the arena -------------------------------------------------------------


@pytest.mark.parametrize("start_method", START_METHODS)
def test_big_payloads_round_trip_through_the_arena(start_method: str) -> None:
    least = _arena.MIN_BYTES
    sizes = [least - 1, least, least + 1, 1 << 20, (8 << 20) + 3]
    values: list[Any] = [make(n) for n in sizes]
    values += [bytearray(make(1 << 20)), "é" * (1 << 19), [make(100_000), 7, make(200_000)]]
    with RobustPool(2, start_method=start_method) as pool:
        assert pool.map(echo, values, chunksize=1) == values
        assert list(pool.imap(echo, values)) == values  # imap may batch them: stream tasks
        assert [pool.apply(echo, (v,)) for v in values] == values
        ours = arenas(pool)
        assert ours and sum(a.consumed for a in ours) >= 3 * 6, "big results did not come through the arena"
        wait_for("every task payload freed", lambda: sum(a.in_use() for a in arenas(pool)) == 0)


def test_payload_too_big_for_the_arena_takes_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_arena, "HALF", 1 << 20)  # workers started now get 1 MiB halves
    big = [make(3 << 19) for _ in range(3)]  # 1.5 MiB: never fits
    mid = [make(600_000) for _ in range(8)]  # one fits at a time per half, the rest overflow
    with RobustPool(2, start_method="fork") as pool:
        assert pool.map(echo, big + mid, chunksize=1) == big + mid
        assert pool.map(echo, mid, chunksize=1) == mid


def test_arguments_are_the_values_at_the_call() -> None:
    """A bytearray mutated after submit is sent as it was: the pickle copies what is mutable."""
    data = bytearray(make(1 << 20))
    before = bytes(data)
    with RobustPool(1, start_method="fork") as pool:
        pool.apply(echo, (b"warm",))
        pending = pool.apply_async(echo_after, (data, 0.0))
        data[:4] = b"XXXX"
        assert pending.get(timeout=WAIT) == before


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_replacement_worker_gets_a_fresh_arena(start_method: str) -> None:
    with RobustPool(2, start_method=start_method) as pool:
        assert pool.map(echo, [make(1 << 20)] * 4, chunksize=1) == [make(1 << 20)] * 4
        wait_for("two workers", lambda: settled(pool, 2))
        before = set(memfd_mappings())
        victim = pool.apply_async(echo_after, (make(4 << 20), 5.0))
        wait_for("the victim running", lambda: any(w.slot_view[SLOT_PHASE] == Phase.RUNNING for w in handles(pool)))
        pid = next(w.pid for w in handles(pool) if w.slot_view[SLOT_PHASE] == Phase.RUNNING)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLostError) as info:
            victim.get(timeout=WAIT)
        assert info.value.signal is signal.SIGKILL
        wait_for("the replacement up and the dead arena unmapped", lambda: settled(pool, 2))
        after = set(memfd_mappings())
        assert len(after - before) == 1 and len(before - after) == 1, (before, after)
        assert pool.map(echo, [make(1 << 20)] * 4, chunksize=1) == [make(1 << 20)] * 4


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_worker_maps_its_arena_once_and_holds_no_descriptor_of_it(start_method: str) -> None:
    """A task writing into the descriptors it inherited cannot reach the arena (see
    ``_wire.map_slot_untracked``), and the worker maps only its own memfd."""
    with RobustPool(1, start_method=start_method) as pool:
        pid, n = pool.apply(pid_and_len, (make(1 << 20),))
        assert n == 1 << 20
        assert memfd_fds(pid) == []
        mapped = memfd_mappings(pid)
        assert len(mapped) == 1 and set(mapped) == set(memfd_mappings()), (mapped, memfd_mappings())


def test_a_process_forked_from_the_owner_does_not_inherit_the_arenas() -> None:
    """The owner's arena mappings are marked do-not-copy (``dc`` in smaps' VmFlags): a
    fork that bypasses Python's at-fork hooks (which unmap them) cannot keep them alive."""
    with RobustPool(1, start_method="fork") as pool:
        pool.apply(echo, (make(1 << 20),))
        flags: list[tuple[int, bool]] = []  # (size, do-not-copy) of each memfd mapping
        with open("/proc/self/smaps") as f:
            size = 0
            for line in f:
                head = line.split()
                if "-" in head[0] and len(head) >= 5:
                    lo, hi = (int(x, 16) for x in head[0].split("-"))
                    size = hi - lo if MEMFD in line else 0
                elif head[0] == "VmFlags:" and size:
                    flags.append((size, "dc" in head[1:]))
        assert flags, "no arena mapped"
        assert all(dc for size, dc in flags if size > PAGE), flags
        assert sum(size for size, _ in flags if size > PAGE) == 2 * _arena.HALF
