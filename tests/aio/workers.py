"""What the asyncio tests hand to workers, and the owner's helpers they share.

Workers receive the functions by reference (``aio.workers.square``), so this module must
stay importable by that name in a fresh interpreter: a spawned supervisor gets the owner's
``sys.path`` (pytest puts ``tests/`` on it for the ``aio`` package) and imports it from
there. Keep it free of pytest. Everything a worker runs is defined in the first section,
at module level; the owner's side (bounded runs, polling, the heartbeat, the temp-file
ledger) follows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import psutil

from robustpool._jobs._single import RobustFuture

if TYPE_CHECKING:
    from robustpool import RobustExecutor, RobustPool

T = TypeVar("T")

MAX_GAP = 0.150  # largest heartbeat gap allowed beyond the process's own stalls (see Heartbeat); 12-100 ms seen
RUN = 30.0  # bound for one asyncio.run of a test (pytest-timeout is 60 s)
GET = 20.0  # bound for a result that should arrive promptly

# --------------------------------------------------------------------------------------
# What runs in the workers (module level, so a spawned supervisor can import it)
# --------------------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def sleep_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def pid_of(x: int) -> tuple[int, int]:
    return x, os.getpid()


def fail_on(bad: int, x: int) -> int:
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x * x


def _helper_that_raises(x: int) -> int:
    raise ValueError(f"helper refused {x}")


def calls_helper(x: int) -> int:
    """Fails two frames deep: the owner must see both frames in the traceback."""
    return _helper_that_raises(x) + 1


class AioTaskError(Exception):
    """A user exception type that must come back as itself, with its attributes."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def raise_custom(code: int) -> NoReturn:
    raise AioTaskError(code)


def kill_self() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)
    raise AssertionError("SIGKILL did not kill the worker")


def mark_then_sleep(marker_dir: str, name: str, seconds: float) -> tuple[str, int]:
    """Leaves ``name`` (holding this worker's pid) when it starts, then sleeps."""
    path = Path(marker_dir, name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.rename(path)  # appears whole: a reader never sees an empty file
    time.sleep(seconds)
    return name, os.getpid()


def write_square(out_dir: str, made_dir: str, x: int) -> str:
    """``x*x`` into a fresh temp file under ``out_dir``; records its name in ``made_dir``."""
    fd, path = tempfile.mkstemp(dir=out_dir, prefix=f"sq{x:04d}-")
    with os.fdopen(fd, "w") as f:
        f.write(str(x * x))
    Path(made_dir, os.path.basename(path)).touch()
    return path


def write_square_slow_from(out_dir: str, made_dir: str, fast: int, delay: float, x: int) -> str:
    """As ``write_square``; items from ``fast`` on take ``delay`` seconds first."""
    if x >= fast:
        time.sleep(delay)
    return write_square(out_dir, made_dir, x)


def write_square_unless(out_dir: str, made_dir: str, slow: int, x: int) -> str:
    """As ``write_square``, but item ``slow`` sleeps 30 s first (it is meant to be stopped)."""
    if x == slow:
        time.sleep(30)
    return write_square(out_dir, made_dir, x)


def hold_gil(seconds: float) -> None:
    """Keep the GIL about ``seconds`` in one C call (``sum`` over a range), so that no other
    thread of this process (the worker's flusher) runs meanwhile."""
    began = time.perf_counter()
    sum(range(200_000))
    per_step = max((time.perf_counter() - began) / 200_000, 1e-9)
    sum(range(int(seconds / per_step)))


def write_square_unless_holding(out_dir: str, made_dir: str, slow: int, hold: float, x: int) -> str:
    """As ``write_square_unless``, but item ``slow`` first holds the GIL for ``hold`` s."""
    if x == slow:
        hold_gil(hold)
        time.sleep(30)
    return write_square(out_dir, made_dir, x)


# --------------------------------------------------------------------------------------
# The owner's side
# --------------------------------------------------------------------------------------


class ConsumerError(Exception):
    """Raised by a test's consumer to leave a block by an exception."""


def run(coro: Coroutine[Any, Any, T], timeout: float = RUN) -> T:
    """``asyncio.run`` of ``coro``, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def warmed(facade: RobustPool | RobustExecutor, workers: int = 2) -> None:
    """Wait until every worker is up, so that no process starts during a test that shares
    this pool (a module fixture): the leak check counts any new process as leaked."""
    deadline = time.monotonic() + RUN
    while len(facade.worker_pids()) < workers:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.02)


def awaitable(future: Future[T]) -> Awaitable[T]:
    """A ``submit`` future, typed as what it is at run time: awaitable. (``submit`` is
    annotated ``-> Future[R]``, which mypy will not ``await``: see test_typing.)"""
    assert isinstance(future, RobustFuture), f"submit returned a {type(future).__name__}, not a RobustFuture"
    return future


async def until(condition: Callable[[], bool], what: str, timeout: float = GET) -> None:
    """Poll ``condition`` without blocking the loop; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def started(marker_dir: Path, name: str) -> int:
    """Wait until the task that leaves ``name`` started; its worker's pid."""
    path = marker_dir / name
    await until(path.exists, f"task {name} to start")
    return int(path.read_text())


def _gaps(ticks: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(ticks)]


class Heartbeat:
    """A task ticking every ``period`` seconds on the loop, between ``start()`` and
    ``stop()`` (or through ``async with``); it also notes the largest thread count seen at
    its ticks. ``max_gap`` is the longest time between two ticks (start and stop count).

    A plain thread ticks alongside (the *control*): when the whole process is not
    scheduled (this 2-core machine is shared: stalls of 100-350 ms were seen, with the
    loop idle in ``select``), the control stalls as well, and that much is forgiven. A
    loop blocked by a wait (a lock, an event, a join) leaves the control ticking, so it is
    not forgiven.
    """

    def __init__(self, period: float = 0.010) -> None:
        self.period = period
        self.ticks: list[float] = []
        self.control: list[float] = []
        self.max_threads = 0
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = False

    async def _beat(self) -> None:
        while not self._stop:
            self.ticks.append(time.monotonic())
            self.max_threads = max(self.max_threads, threading.active_count())
            await asyncio.sleep(self.period)

    def _control(self) -> None:
        while not self._stop:
            self.control.append(time.monotonic())
            time.sleep(self.period / 2)
        self.control.append(time.monotonic())

    async def start(self) -> None:
        self.ticks.append(time.monotonic())
        self._thread = threading.Thread(target=self._control, name="heartbeat-control", daemon=True)
        self._thread.start()
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)  # the first tick is taken now

    async def stop(self) -> None:
        self._stop = True
        assert self._task is not None and self._thread is not None
        await self._task
        self.ticks.append(time.monotonic())
        self._thread.join(5.0)  # it sleeps period/2 at most

    async def __aenter__(self) -> Heartbeat:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def duration(self) -> float:
        return self.ticks[-1] - self.ticks[0]

    @property
    def max_gap(self) -> float:
        return max(_gaps(self.ticks))

    @property
    def stall(self) -> float:
        """The control thread's longest gap: the longest the whole process stood still."""
        return max(_gaps(self.control), default=0.0)

    @property
    def stalled(self) -> float:
        """Time the whole process stood still, in all (control gaps over two periods)."""
        return sum(g for g in _gaps(self.control) if g > 2 * self.period)

    def assert_free(self, max_gap: float = MAX_GAP) -> None:
        """The loop was never held up for ``max_gap`` seconds beyond the process's own
        longest stall, and ticked often: at least once per 2.5 periods on average over the
        time the process ran (a blocked loop ticks rarely)."""
        assert self.max_gap < max_gap + self.stall, self.describe()
        assert len(self.ticks) >= (self.duration - self.stalled) / (2.5 * self.period), self.describe()

    def describe(self) -> str:
        return (
            f"{len(self.ticks)} ticks in {self.duration:.3f} s, largest gap {self.max_gap * 1000:.1f} ms; "
            f"the process stood still {self.stalled * 1000:.0f} ms in all, at most {self.stall * 1000:.1f} ms at once"
        )


class Ledger:
    """The temp-file pipeline's books: files the workers made, files the consumer took,
    and every path ``cleanup`` was given (it deletes the file)."""

    def __init__(self, root: Path) -> None:
        self.out = root / "out"
        self.made = root / "made"
        self.out.mkdir()
        self.made.mkdir()
        self.consumed: list[str] = []
        self.cleaned: list[str] = []
        self._lock = threading.Lock()

    def cleanup(self, path: str) -> None:
        """The pool's ``cleanup=``: runs in the owner, on whichever thread the pool picks."""
        with self._lock:
            self.cleaned.append(os.path.basename(path))
        os.unlink(path)

    def consume(self, path: str) -> int:
        """The consumer: read the file, delete it, return its number."""
        with open(path) as f:
            value = int(f.read())
        os.unlink(path)
        self.consumed.append(os.path.basename(path))
        return value

    def check(self) -> None:
        """Every file made was consumed or cleaned, exactly once, and none is left."""
        made = set(os.listdir(self.made))
        with self._lock:
            cleaned = Counter(self.cleaned)
        twice = {name: n for name, n in cleaned.items() if n > 1}
        assert not twice, f"cleaned more than once: {twice}"
        assert not set(self.consumed) & set(cleaned), "a received result was also cleaned"
        assert set(self.consumed) | set(cleaned) == made, (
            f"made {len(made)}, consumed {len(self.consumed)}, cleaned {len(cleaned)}: "
            f"neither consumed nor cleaned {sorted(made - set(self.consumed) - set(cleaned))}"
        )
        assert os.listdir(self.out) == [], f"temp files left: {os.listdir(self.out)}"
