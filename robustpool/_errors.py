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
    """Base class of every error robustpool raises on its own behalf.

    ``except RobustPoolError`` catches what the pool reports (a lost worker, a timeout, a value
    that could not be pickled, a broken or terminated pool), never the task's own exceptions,
    which are re-raised as themselves. Misuse (a bad argument, a closed pool) raises the usual
    ``TypeError``, ``ValueError`` or ``RuntimeError`` instead, as the standard library does.
    """


class WorkerLostError(RobustPoolError):
    """A worker process died while it had a task; raised for that task only.

    The world broke the worker (a signal, the OOM killer, ``os._exit``, a crash in native code,
    the supervisor dying), or robustpool killed it (twice the ``memory_limit``, garbage written
    into its socket). Tasks queued behind it run elsewhere and the worker is replaced:
    ``multiprocessing.Pool`` would wait forever, ``ProcessPoolExecutor`` would break. With
    ``retries=n`` the task is run again on a fresh worker first, and this is raised after its
    ``n + 1``-th death. The message says which worker died of what, while doing what, and the
    likely cause.

    :ivar pid: the pid of the worker that died (the last one, when the task killed several);
        None when the engine cannot know it (a Dask worker lost with the task's process).
    :ivar exitcode: how it ended: negative for a signal (``-9`` for SIGKILL), an exit code
        otherwise; None when unknown (its supervisor was gone).
    :ivar signal: the ``signal.Signals`` that killed it, or None if it was no signal.
    :ivar task_index: the task's position in its call (``map``, ``imap``: the item's index);
        None for ``apply`` and ``submit``.
    :ivar task: a short description of the call, such as ``kill_self(5)``, or None.
    :ivar phase: what the worker was doing with the task, in words: ``"running"``,
        ``"unpickling"``, ``"pickling the result of"``, ``"sending the result of"``,
        ``"running the initializer before"``.
    :ivar attempts: one ``(pid, exitcode)`` pair per worker the task killed, oldest first
        (more than one with ``retries``).
    :ivar last_rss: the RSS of the worker's process tree in bytes, as last measured, or None.
    :ivar reason: when robustpool knows why the worker ended, that cause in words (robustpool
        killed it, or its own loop gave up: the task closed the descriptors it inherited);
        None otherwise, and the message guesses from the signal.
    :ivar host: where the worker ran when that was not this machine: the address of the Dask
        worker (``robustpool.dask``); None on one machine.
    """

    def __init__(
        self,
        pid: int | None,
        exitcode: int | None,
        task_index: int | None = None,
        task: str | None = None,
        phase: str = "running",
        attempts: tuple[tuple[int, int | None], ...] = (),
        last_rss: int | None = None,
        reason: str | None = None,
        host: str | None = None,
    ) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = _signal_of(exitcode)
        self.task_index = task_index
        self.task = task
        self.phase = phase
        self.attempts = tuple(attempts) or (((pid, exitcode),) if pid is not None else ())
        self.last_rss = last_rss
        self.reason = reason
        self.host = host
        super().__init__(self._message())

    def _message(self) -> str:
        what = task_label(self.task_index, self.task)
        who = "a worker" if self.pid is None else f"worker {self.pid}"
        where = f" on {self.host}" if self.host else ""
        msg = f"{who}{where} died from {describe_exitcode(self.exitcode)} while {self.phase} {what}"
        if len(self.attempts) > 1:
            tried = ", ".join(f"pid {p}: {describe_exitcode(c)}" for p, c in self.attempts)
            msg += f"; it killed {len(self.attempts)} workers ({tried})"
        return f"{msg}. Likely cause: {_likely_cause(self.exitcode, self.reason, self.last_rss)}"

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.pid, self.exitcode, self.task_index, self.task, self.phase, self.attempts)
        return (type(self), (*args, self.last_rss, self.reason, self.host))


class TaskTimeoutError(RobustPoolError):
    """A task ran longer than its ``task_timeout``; its worker was killed and replaced.

    The worker's subprocesses are killed with it; a timed-out task is not retried (whatever
    ``retries`` says). Only process pools enforce a timeout.

    :ivar timeout: the limit that was passed, in seconds.
    :ivar elapsed: how long the task had run when its worker was killed, in seconds.
    :ivar task_index: the task's position in its call, or None for ``apply`` and ``submit``.
    :ivar task: a short description of the call, such as ``slow(3)``, or None.
    :ivar pid: the pid of the worker that was killed, or None.
    :ivar host: the address of the Dask worker it ran on (``robustpool.dask``); None on one
        machine.
    """

    def __init__(
        self,
        timeout: float,
        elapsed: float,
        task_index: int | None = None,
        task: str | None = None,
        pid: int | None = None,
        host: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.elapsed = elapsed
        self.task_index = task_index
        self.task = task
        self.pid = pid
        self.host = host
        what = task_label(task_index, task)
        where = f" (pid {pid})" if pid is not None else ""
        where += f" on {host}" if host else ""
        super().__init__(
            f"{what} ran for {elapsed:.2f} s, past its task_timeout of {timeout:g} s; its worker{where} was killed and replaced"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.timeout, self.elapsed, self.task_index, self.task, self.pid, self.host)
        return (type(self), args)


class TaskSerializationError(RobustPoolError):
    """A task or its result could not be pickled or unpickled.

    ``phase`` is a ``SerializationPhase`` (a string: ``"pickling the task in the
    owner"``, ``"unpickling the task in the worker"``, ``"pickling the result in the
    worker"`` or ``"unpickling the result in the owner"``). The original error is the
    ``__cause__`` when it could be carried over, and its text is always in ``detail``.

    The error is also an instance of the original error's type when that is an
    ``Exception`` (``TypeError`` for a lock, ``pickle.PicklingError``, whatever a
    ``__reduce__`` raised): code written for ``multiprocessing.Pool``, which raises the
    original error itself, still catches it. ``original`` names that type (or None).

    Only that task fails; the pool goes on. A function that cannot be pickled fails every item
    of its call (``imap`` and an executor's ``map`` raise it at the call).

    :ivar phase: where it failed: a ``SerializationPhase``, which is a ``str``.
    :ivar detail: the original error's type and text, such as ``"TypeError: cannot pickle
        '_thread.lock' object"``.
    :ivar task_index: the task's position in its call, or None for ``apply`` and ``submit``.
    :ivar task: a short description of the call, or None.
    :cvar original: the original error's type when the error is also an instance of it,
        else None.
    """

    original: type[Exception] | None = None

    def __init__(self, phase: str, detail: str, task_index: int | None = None, task: str | None = None) -> None:
        self.phase = phase
        self.detail = detail
        self.describe(task_index, task)

    def describe(self, task_index: int | None, task: str | None) -> None:
        """Set ``task_index`` and ``task`` and rebuild the message; used by robustpool, as an
        error made in a worker learns its task's position in the owner.

        :param task_index: the task's position in its call, or None.
        :param task: a short description of the call, or None.
        """
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
        with ``exc`` as the cause and its type and text as the detail. Used by robustpool.

        :param phase: where it failed (a ``SerializationPhase``).
        :param exc: the error pickle raised.
        :param task_index: the task's position in its call, or None.
        :param task: a short description of the call, or None.
        :param detail: the text to show instead of ``exc``'s type and text; default None.
        :returns: a TaskSerializationError that is also an instance of ``type(exc)`` when that
            is an ``Exception`` type it can be mixed with, else a plain one.
        """
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

    A task's exception normally comes back as itself, with the worker's frames; this one could
    not be pickled, or not unpickled in the owner (its class is not importable there, its
    ``__reduce__`` fails), so its type, message and traceback come back as text. Only that task
    fails.

    :ivar type_name: the remote exception's qualified type name, such as ``"mymod.MyError"``.
    :ivar message: the remote exception's ``str()``, as computed in the worker.
    :ivar remote_traceback: the traceback, as formatted in the worker.
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
    for the standard library's executors catches it. ``multiprocessing.Pool`` respawns the
    workers forever instead. The pool cannot recover: fix the initializer and build a new one.

    :ivar failures: how many workers in a row failed their initializer (3).
    :ivar remote_traceback: the initializer's traceback from the last worker, as text.
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
    new task with this error. ``last_error`` is the system's last answer. The pool cannot
    recover: free the resource (``ulimit -u``, a container's pids limit, memory) and build a new
    one. Not a ``BrokenExecutor``.

    :ivar failures: how many starts in a row failed.
    :ivar last_error: the system's last answer, as text (such as ``"[Errno 11] Resource
        temporarily unavailable"``).
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
    or garbage collection) before this task produced a result.

    ``multiprocessing.Pool`` leaves such results waiting forever; robustpool fails them with
    this, at once. Only the message is carried: ``str(err)``.
    """

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
