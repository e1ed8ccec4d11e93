"""What runs in the workers: the one task function and every fault it can apply.

Everything here is defined at module level and pickled by reference, so supervisors started
by ``spawn`` (fresh interpreters) import it like any other module. A task receives a
:class:`Spec` that says which item it is, which fault to apply and where its result file
goes; it never decides anything by itself (no randomness in the worker), so a seed fully
determines the plan.

Contract of :func:`run`:

* a fault that kills the worker or raises fires *before* the result file is created, so a
  failed item never leaves a file behind (the file exists only for a computed result);
* a successful item creates ``<results>/<token>@<pid>@<nonce>`` (empty, one per execution)
  and returns an :class:`Outcome`
  whose ``check`` is :func:`expected_check` of its token (and of its payload), so the owner
  verifies every value it receives;
* ``once`` faults fire only on an item's first attempt: the attempt is recorded by creating
  ``<markers>/<token>`` with ``O_EXCL``, so a retried item runs clean on a fresh worker;
* the result file is named after the worker that computed it, and a fault that kills its
  worker (or sleeps until the timeout does) first creates ``<markers>/dying-<pid>``: a
  result file left by a worker that died before sending the result is then told apart
  from a result robustpool received and failed to clean (creating a file is atomic, so
  a file either exists with its writer's pid in its name or does not exist);
* errors carry the token (message, ``SystemExit.code``) so the owner can attribute an error
  even when robustpool gives no position (``apply_async``, ``submit``, ``imap_unordered``).
"""

from __future__ import annotations

import enum
import os
import signal
import sys
import threading
import time
import zlib
from typing import Any, NamedTuple

from robustpool._chaos._faults import EXIT, KILL, SEGFAULT, die


class Fault(enum.StrEnum):
    """A fault an item applies, in the worker or in the owner (``UNPICKLABLE_ARG``)."""

    NONE = "none"
    EXCEPTION = "exception"  # raise StressError
    SYS_EXIT = "sys_exit"  # sys.exit(token)
    MEMORY = "memory"  # a real allocation failure: bytearray(2**62)
    SIGKILL = "sigkill"  # os.kill(getpid(), SIGKILL)
    SIGTERM = "sigterm"
    SIGSEGV = "sigsegv"  # a real invalid read (robustpool.testing's die)
    OS_EXIT = "os_exit"  # os._exit(71)
    UNPICKLABLE_RESULT = "unpicklable_result"  # the result holds a lock: pickling fails in the worker
    UNLOADABLE_RESULT = "unloadable_result"  # the result pickles but fails to unpickle in the owner
    UNPICKLABLE_EXC = "unpicklable_exc"  # the exception cannot be pickled: RemoteTaskError
    UNPICKLABLE_ARG = "unpicklable_arg"  # the argument cannot be pickled in the owner
    SLOW = "slow"  # sleeps past task_timeout


#: Faults that kill the worker; a ``once`` one is survived when the pool has retries.
KILLING = frozenset({Fault.SIGKILL, Fault.SIGTERM, Fault.SIGSEGV, Fault.OS_EXIT})


class Spec(NamedTuple):
    """One item's instructions. Plain data, so it pickles with the standard pickler."""

    token: str  # unique in a run; names the result file
    fault: str  # a Fault value
    once: bool  # fire the fault on the first attempt only
    results: str  # directory for result files
    markers: str  # directory for first-attempt markers
    owner_pid: int  # for UNLOADABLE_RESULT: the process that must fail to unpickle
    work: float = 0.0  # seconds to sleep before finishing (a non-trivial task)
    payload: bytes = b""  # data to digest (large-payload profile)
    echo: bool = False  # send the payload back in the result
    arg: Any = None  # set to something unpicklable for UNPICKLABLE_ARG


class Outcome(NamedTuple):
    """A successful item's value."""

    token: str
    check: int
    path: str
    echo: bytes = b""


class StressError(Exception):
    """The ordinary exception a task raises on purpose (rebuilt as itself in the owner)."""


class UnpicklableError(Exception):
    """An exception that cannot be pickled (it holds a lock): arrives as RemoteTaskError."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.lock = threading.Lock()


class UnpicklableResult:
    """A result value that cannot be pickled in the worker."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.lock = threading.Lock()


def _refuse_in_owner(token: str, owner_pid: int) -> str:
    if os.getpid() == owner_pid:
        raise StressError(f"{token} refuses to be unpickled in the owner")
    return token


class UnloadableResult:
    """A result that pickles in the worker and fails to unpickle in the owner."""

    def __init__(self, token: str, owner_pid: int) -> None:
        self.token = token
        self.owner_pid = owner_pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_in_owner, (self.token, self.owner_pid))


class UnpicklableArg:
    """A task argument whose pickling fails in the owner."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise StressError("this argument refuses to be pickled")


def expected_check(token: str, payload: bytes = b"") -> int:
    """The value a correct run of ``token`` returns: derived from the input only."""
    return zlib.crc32(payload, zlib.crc32(token.encode())) ^ len(payload)


def _first_attempt(spec: Spec) -> bool:
    try:
        fd = os.open(os.path.join(spec.markers, spec.token), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _dying(spec: Spec) -> None:
    """Record that this worker is about to die, with every result it has not sent yet."""
    with open(os.path.join(spec.markers, f"dying-{os.getpid()}"), "wb"):
        pass


def _apply(spec: Spec) -> Any:
    """Apply the fault of ``spec``; returns a replacement result for result faults."""
    fault = Fault(spec.fault)
    if fault is Fault.NONE or fault is Fault.UNPICKLABLE_ARG:
        return None
    if spec.once and not _first_attempt(spec):
        return None
    token = spec.token
    if fault in KILLING or fault is Fault.SLOW:
        _dying(spec)
    if fault is Fault.EXCEPTION:
        raise StressError(token)
    if fault is Fault.SYS_EXIT:
        sys.exit(token)
    if fault is Fault.MEMORY:
        try:
            bytearray(2**62)  # the allocator refuses: a real MemoryError, nothing allocated
        except MemoryError as exc:
            exc.args = (token,)
            raise
        raise AssertionError("allocating 4 EiB succeeded")  # pragma: no cover
    # The deaths are robustpool.testing's, so the suite dies the way users' chaos runs do.
    if fault is Fault.SIGKILL:
        die(KILL)
    elif fault is Fault.SIGTERM:
        os.kill(os.getpid(), signal.SIGTERM)
    elif fault is Fault.SIGSEGV:
        die(SEGFAULT)
    elif fault is Fault.OS_EXIT:
        die(EXIT)
    elif fault is Fault.UNPICKLABLE_EXC:
        raise UnpicklableError(token)
    elif fault is Fault.UNPICKLABLE_RESULT:
        return UnpicklableResult(token)
    elif fault is Fault.UNLOADABLE_RESULT:
        return UnloadableResult(token, spec.owner_pid)
    elif fault is Fault.SLOW:
        time.sleep(3600)  # the pool's task_timeout kills this worker long before
    if fault in KILLING:
        time.sleep(60)  # a fatal signal is delivered before this returns
        raise AssertionError(f"{fault} did not kill the worker")  # pragma: no cover
    return None


def run(spec: Spec) -> Any:
    """The task every job runs: apply the fault, do the work, create the result file."""
    replacement = _apply(spec)
    if replacement is not None:
        return replacement
    if spec.work:
        time.sleep(spec.work)
    # One file per execution: an item run twice (a re-run after its worker died, or after
    # its batch's results were lost) leaves two files, and only the delivered one is removed.
    path = os.path.join(spec.results, f"{spec.token}@{os.getpid()}@{os.urandom(4).hex()}")
    # Created last: a result file exists only for a result the worker computed.
    with open(path, "wb"):
        pass
    return Outcome(spec.token, expected_check(spec.token, spec.payload), path, spec.payload if spec.echo else b"")


def run_star(spec: Spec, extra: int) -> Any:
    """``run`` for ``apply_async(run_star, (spec, extra))`` and ``submit``: two arguments."""
    if extra != len(spec.token):
        raise AssertionError(f"argument mix-up: {extra} for {spec.token}")
    return run(spec)
