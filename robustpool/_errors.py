"""The exceptions robustpool raises, named for who is at fault.

Every class keeps the arguments of its constructor reachable through ``__reduce__``, so an
instance survives ``pickle`` and ``cloudpickle`` round trips with all of its attributes (a
user may ship one to another process, log it with a pickling handler, or store it).

Who raises what:

* :class:`WorkerLostError` -- the world broke a worker (a signal, ``os._exit``, the OOM
  killer, the supervisor dying); raised for the one task that was running on it.
* :class:`TaskTimeoutError` -- the task ran past its ``task_timeout``; its worker was killed.
* :class:`TaskSerializationError` -- a task or its result could not cross the process
  boundary; says in which phase.
* :class:`RemoteTaskError` -- the task raised an exception that cannot be rebuilt in the
  owner; carries its type name, message and the worker's formatted traceback.
* :class:`InitializerError` -- the pool's ``initializer`` failed repeatedly; the pool is
  broken and fails its tasks with this error.
* :class:`WorkerStartError` -- the system refused to start workers (fork failed: a process
  limit, no memory) again and again while none was alive; the pool is broken.
* :class:`PoolTerminatedError` -- you terminated the pool while the task was outstanding.
"""

from __future__ import annotations

import enum
import signal
from concurrent.futures import BrokenExecutor
from typing import Any


class SerializationPhase(enum.StrEnum):
    """Where a value failed to cross the process boundary (``TaskSerializationError.phase``)."""

    PICKLE_TASK = "pickling the task in the owner"
    LOAD_TASK = "unpickling the task in the worker"
    DUMP_RESULT = "pickling the result in the worker"
    LOAD_RESULT = "unpickling the result in the owner"


def task_label(task_index: int | None, task: str | None) -> str:
    """How errors name a task: ``task #5 f(5)``, or ``a task f(5)`` when it has no position."""
    what = f"task #{task_index}" if task_index is not None else "a task"
    return f"{what} {task}" if task else what


def _signal_of(exitcode: int | None) -> signal.Signals | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode)
    except ValueError:
        return None


def describe_exitcode(exitcode: int | None) -> str:
    """Say how a process ended: ``SIGKILL (-9)``, ``exit code 3`` or ``an unknown status``."""
    if exitcode is None:
        return "an unknown status"
    sig = _signal_of(exitcode)
    if sig is not None:
        return f"{sig.name} ({exitcode})"
    if exitcode < 0:
        return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _format_rss(rss: int) -> str:
    return f"{rss / 2**20:.1f} MiB"


def _likely_cause(exitcode: int | None, reason: str | None, last_rss: int | None) -> str:
    if reason:
        return reason
    sig = _signal_of(exitcode)
    rss = f"; its last RSS seen was {_format_rss(last_rss)}" if last_rss else ""
    if sig is signal.SIGKILL:
        return (
            "it was killed from outside: most often the kernel's OOM killer or a container "
            f"memory limit (see `dmesg`){rss}, or someone ran `kill -9`"
        )
    if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
        return (
            "a crash in native code (a C extension, ctypes, or a bug in a library); "
            "run the task in a plain process with `python -X faulthandler` to see where"
        )
    if sig is signal.SIGABRT:
        return "native code called abort(), e.g. a failed assertion inside a C library"
    if sig is signal.SIGTERM:
        return "it was terminated from outside (kill, a container stop, a job scheduler)"
    if sig is not None:
        return f"it received {sig.name} and did not handle it"
    if exitcode is not None:
        return f"the task called os._exit({exitcode}) or native code called exit()"
    return "the process vanished without a status (its supervisor was gone)"


class RobustPoolError(Exception):
    """Base class of every error robustpool raises on its own behalf."""


class WorkerLostError(RobustPoolError):
    """A worker process died while running a task; raised for that task only.

    Attributes: ``pid``, ``exitcode`` (negative for a signal, None when unknown), ``signal``
    (a :class:`signal.Signals` or None), ``task_index`` (the task's position in its call),
    ``task`` (a short description such as ``kill_self(5)``), ``phase`` (what the worker was
    doing with the task), ``attempts`` (one ``(pid, exitcode)`` pair per worker the task
    killed, oldest first), ``last_rss`` (bytes, when the supervisor measured it) and
    ``reason`` (set when robustpool itself killed the worker).
    """

    def __init__(
        self,
        pid: int,
        exitcode: int | None,
        task_index: int | None = None,
        task: str | None = None,
        phase: str = "running",
        attempts: tuple[tuple[int, int | None], ...] = (),
        last_rss: int | None = None,
        reason: str | None = None,
    ) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = _signal_of(exitcode)
        self.task_index = task_index
        self.task = task
        self.phase = phase
        self.attempts = tuple(attempts) or ((pid, exitcode),)
        self.last_rss = last_rss
        self.reason = reason
        super().__init__(self._message())

    def _message(self) -> str:
        what = task_label(self.task_index, self.task)
        msg = f"worker {self.pid} died from {describe_exitcode(self.exitcode)} while {self.phase} {what}"
        if len(self.attempts) > 1:
            tried = ", ".join(f"pid {p}: {describe_exitcode(c)}" for p, c in self.attempts)
            msg += f"; it killed {len(self.attempts)} workers ({tried})"
        return f"{msg}. Likely cause: {_likely_cause(self.exitcode, self.reason, self.last_rss)}"

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.pid, self.exitcode, self.task_index, self.task, self.phase, self.attempts)
        return (type(self), (*args, self.last_rss, self.reason))


class TaskTimeoutError(RobustPoolError):
    """A task ran longer than its ``task_timeout``; its worker was killed and replaced."""

    def __init__(
        self,
        timeout: float,
        elapsed: float,
        task_index: int | None = None,
        task: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.timeout = timeout
        self.elapsed = elapsed
        self.task_index = task_index
        self.task = task
        self.pid = pid
        what = task_label(task_index, task)
        where = f" (pid {pid})" if pid is not None else ""
        super().__init__(
            f"{what} ran for {elapsed:.2f} s, past its task_timeout of {timeout:g} s; its worker{where} was killed and replaced"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.timeout, self.elapsed, self.task_index, self.task, self.pid)
        return (type(self), args)


class TaskSerializationError(RobustPoolError):
    """A task or its result could not be pickled or unpickled.

    ``phase`` is a :class:`SerializationPhase` (a string: ``"pickling the task in the
    owner"``, ``"unpickling the task in the worker"``, ``"pickling the result in the
    worker"`` or ``"unpickling the result in the owner"``). The original error is the
    ``__cause__`` when it could be carried over, and its text is always in ``detail``.

    The error is also an instance of the original error's type when that is an
    ``Exception`` (``TypeError`` for a lock, ``pickle.PicklingError``, whatever a
    ``__reduce__`` raised): code written for ``multiprocessing.Pool``, which raises the
    original error itself, still catches it. ``original`` names that type (or None).
    """

    original: type[Exception] | None = None

    def __init__(self, phase: str, detail: str, task_index: int | None = None, task: str | None = None) -> None:
        self.phase = phase
        self.detail = detail
        self.describe(task_index, task)

    def describe(self, task_index: int | None, task: str | None) -> None:
        """Name the task (an error made in a worker learns its position in the owner)."""
        self.task_index = task_index
        self.task = task
        # Not super().__init__: in a class mixed with the original type, that would call
        # the original's __init__, whose arguments may be anything.
        Exception.__init__(self, f"error {self.phase} for {task_label(task_index, task)}: {self.detail}")

    def __str__(self) -> str:
        return Exception.__str__(self)  # not the original type's (OSError, KeyError format theirs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_serialization_error, (self.phase, self.detail, self.task_index, self.task, self.original))

    @classmethod
    def of(
        cls, phase: str, exc: BaseException, task_index: int | None = None, task: str | None = None, detail: str | None = None
    ) -> TaskSerializationError:
        """The error for ``exc``, raised while (un)pickling in ``phase``: of its type too,
        with ``exc`` as the cause and its type and text as the detail."""
        if detail is None:
            detail = f"{type(exc).__name__}: {safe_str(exc)}"
        err = _serialization_error(phase, detail, task_index, task, type(exc))
        err.__cause__ = exc
        return err


_typed: dict[type[Exception], type[TaskSerializationError]] = {}


def _serialization_error(
    phase: str, detail: str, task_index: int | None, task: str | None, original: type[BaseException] | None
) -> TaskSerializationError:
    """A TaskSerializationError that is also an ``original``, if that can be made."""
    cls = _typed_class(original) if original is not None else TaskSerializationError
    try:
        return cls(phase, detail, task_index, task)
    except Exception:
        return TaskSerializationError(phase, detail, task_index, task)


def _typed_class(original: type[BaseException]) -> type[TaskSerializationError]:
    """TaskSerializationError mixed with ``original`` (cached). Only for ``Exception``
    types: a serialization error must never be caught as SystemExit or KeyboardInterrupt."""
    if not (isinstance(original, type) and issubclass(original, Exception)) or issubclass(original, TaskSerializationError):
        return TaskSerializationError
    cls = _typed.get(original)
    if cls is None:

        def __new__(cls: type[BaseException], *args: object, **kwargs: object) -> BaseException:
            return original.__new__(cls)

        try:
            cls = type(
                "TaskSerializationError",
                (TaskSerializationError, original),
                {"__module__": "robustpool", "__new__": __new__, "original": original},
            )
            cls("probe", "probe")  # some types cannot be mixed in or built this way
        except Exception:
            cls = TaskSerializationError
        _typed[original] = cls
    return cls


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException:
        return f"<str() of the {type(exc).__name__} failed>"


class RemoteTaskError(RobustPoolError):
    """A task raised an exception that could not be rebuilt in the owner.

    ``type_name`` is the remote exception's qualified type name, ``message`` its ``str()``
    and ``remote_traceback`` the traceback formatted in the worker.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        super().__init__(
            f"{type_name}: {message}\n(the exception could not be rebuilt in the owner; "
            f"the worker's traceback follows)\n{remote_traceback}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.remote_traceback))


class InitializerError(RobustPoolError, BrokenExecutor):
    """The pool's ``initializer`` failed in several fresh workers in a row.

    The pool stops starting workers and fails every pending and new task with this error;
    ``remote_traceback`` holds the initializer's traceback from the last worker. It is also
    a ``concurrent.futures.BrokenExecutor`` (as ``BrokenProcessPool`` is), so code written
    for the standard library's executors catches it.
    """

    def __init__(self, failures: int, remote_traceback: str) -> None:
        self.failures = failures
        self.remote_traceback = remote_traceback
        super().__init__(
            f"the pool's initializer failed in {failures} workers in a row, so the pool is "
            f"broken; fix the initializer and build a new pool. Last failure:\n{remote_traceback}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures, self.remote_traceback))


class WorkerStartError(RobustPoolError):
    """The pool could not start any worker: ``failures`` attempts in a row failed (for
    example ``fork`` failing with EAGAIN under a process limit) while none was alive.

    The pool retries a failed start with backoff for as long as other workers are alive;
    only when it has none and the budget is spent does it break, failing every pending and
    new task with this error. ``last_error`` is the system's last answer.
    """

    def __init__(self, failures: int, last_error: str) -> None:
        self.failures = failures
        self.last_error = last_error
        super().__init__(
            f"the pool could not start a worker: {failures} attempts in a row failed and none is alive, so the pool "
            f"is broken (is a process, thread or memory limit reached? see `ulimit -u`, the container's pids limit). "
            f"Last error: {last_error}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures, self.last_error))


class PoolTerminatedError(RobustPoolError):
    """The pool was terminated (``terminate()``, an exception leaving its ``with`` block,
    or garbage collection) before this task produced a result."""

    def __init__(self, message: str = "the pool was terminated before this task finished") -> None:
        super().__init__(message)


# Public classes say where users import them from: tracebacks print ``robustpool.WorkerLostError``
# and pickles name ``robustpool.WorkerLostError`` (resolved by the package's lazy namespace).
for _cls in (
    RobustPoolError,
    WorkerLostError,
    TaskTimeoutError,
    TaskSerializationError,
    RemoteTaskError,
    InitializerError,
    WorkerStartError,
    PoolTerminatedError,
):
    _cls.__module__ = "robustpool"
