"""RobustThreadPool and RobustThreadPoolExecutor: the two facades over the thread engine.

The same APIs as ``RobustPool`` and ``RobustExecutor`` (the same base classes, the same
lifecycle core and jobs), over threads of the owner: nothing is pickled, objects pass by
reference, as in ``multiprocessing.pool.ThreadPool`` and ``ThreadPoolExecutor``. What the
thread engine cannot enforce is refused at construction, with the reason: a task timeout
(a running call cannot be stopped), a memory limit (threads share one process), recycling
(``maxtasksperchild``) and ``retries`` (a task cannot kill its thread).

Where the standard library's thread pools fall short and these do not: ``imap`` results
the consumer never took are passed to ``cleanup``; an error in a chunk fails that item
only; leaving ``with`` normally waits for the work (``ThreadPool`` terminates it);
``terminate()`` fails what is outstanding instead of leaving its results waiting forever.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, final

from ._config import EXECUTOR_NAMES, PoolConfig
from ._core import PoolCore, refuse_unsupported
from ._executor import ExecutorBase
from ._pool import PoolBase
from ._threads._engine import ThreadEngine

_ENGINE = "a thread pool"


@final
class RobustThreadPool(PoolBase):
    """A thread pool with the ``multiprocessing.Pool`` API (``ThreadPool``'s), for I/O-bound work.

    Every method of ``RobustPool`` works the same, over threads of the owner: nothing is
    pickled, objects pass by reference. Where ``multiprocessing.pool.ThreadPool`` falls short
    and this does not: ``imap`` results the consumer never took are passed to ``cleanup``; an
    error in a chunk fails that item only; leaving ``with`` normally waits for the work
    (``ThreadPool`` terminates it); ``terminate()`` fails what is outstanding instead of leaving
    its results waiting forever.

    ``terminate()`` cannot stop a call that is running: it fails it (and everything queued)
    with ``PoolTerminatedError`` at once, and the call finishes in the background; a value
    it returns then is passed to the ``cleanup`` of its ``imap``/``map``, if any. For the same
    reason a running future's ``cancel()`` returns False, and ``worker_pids()`` is empty.

    :param processes: how many threads, started as work arrives; default None:
        ``os.cpu_count()``. At most 4096.
    :param initializer: called as ``initializer(*initargs)`` once in each thread; default None. If
        it fails in three fresh threads in a row the pool is broken: tasks fail with
        ``InitializerError``.
    :param initargs: the arguments of ``initializer``; default ``()``.
    :param buffersize: chunks an ``imap`` keeps ahead of its consumer; default None:
        ``max(256, 32 * processes)``.
    :param close_timeout: seconds closing an ``imap`` iterator waits for its running calls, to
        clean their results; default 10.0; None or ``math.inf``: as long as they take.
    :param maxtasksperchild: only None: exists so that code written for ``RobustPool`` gets a
        clear ``ValueError`` (threads are not recycled).
    :param task_timeout: only None or ``math.inf``: a running call cannot be stopped (a call's
        own ``task_timeout`` is refused likewise).
    :param memory_limit: only None: threads share one process's memory.
    :param retries: only 0: a task cannot kill its thread, so no death is retried.
    :raises ValueError: ``maxtasksperchild``, ``task_timeout``, ``memory_limit`` or ``retries`` was
        given, with the reason; or a parameter is out of range (``processes`` below 1 or above
        4096, ``buffersize`` below 1, ``close_timeout`` not > 0).
    :raises TypeError: a parameter has the wrong type.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        buffersize: int | None = None,
        close_timeout: float | None = 10.0,
        maxtasksperchild: int | None = None,
        task_timeout: float | None = None,
        memory_limit: int | str | None = None,
        retries: int = 0,
    ) -> None:
        config = PoolConfig.build(
            processes,
            initializer,
            initargs,
            maxtasksperchild,
            task_timeout=task_timeout,
            retries=retries,
            memory_limit=memory_limit,
            buffersize=buffersize,
            close_timeout=close_timeout,
            threads=True,
        )
        refuse_unsupported(config, ThreadEngine.capabilities, _ENGINE)
        self._config = config
        self._core = PoolCore(ThreadEngine(config))


@final
class RobustThreadPoolExecutor(ExecutorBase):
    """A ``concurrent.futures`` executor over threads: ``ThreadPoolExecutor``'s API.

    Every method of ``RobustExecutor`` works the same, over threads of the owner: nothing is
    pickled, objects pass by reference. ``map`` is lazy, with ``buffersize`` and ``cleanup`` as
    on ``RobustExecutor``. A running future cannot be stopped: its ``cancel()`` returns False,
    as in the standard library; ``worker_pids()`` is empty.

    :param max_workers: how many threads; default None: ``min(32, os.cpu_count() + 4)``, as in
        the standard library. At most 4096.
    :param thread_name_prefix: the threads are named ``{thread_name_prefix}-{k}``; default ``""``:
        ``robustpool-thread-N``, N numbering the executors.
    :param initializer: called as ``initializer(*initargs)`` once in each thread; default None.
        Three failures in a row break the executor: futures fail with ``InitializerError``
        (a ``concurrent.futures.BrokenExecutor``), and ``submit`` raises it.
    :param initargs: the arguments of ``initializer``; default ``()``.
    :param buffersize: chunks ``map`` keeps ahead of its consumer; default None:
        ``max(256, 32 * max_workers)``.
    :param close_timeout: seconds closing a ``map`` iterator waits for its running calls, to clean
        their results; default 10.0; None or ``math.inf``: as long as they take.
    :raises TypeError: ``thread_name_prefix`` is not a str, or another parameter has the wrong type.
    :raises ValueError: a parameter is out of range (``"max_workers must be greater than 0"``).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        *,
        buffersize: int | None = None,
        close_timeout: float | None = 10.0,
    ) -> None:
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str, not {type(thread_name_prefix).__name__}")
        config = PoolConfig.build(
            max_workers,
            initializer,
            initargs,
            buffersize=buffersize,
            close_timeout=close_timeout,
            names=EXECUTOR_NAMES,
            default_workers=min(32, (os.cpu_count() or 1) + 4),
            threads=True,
        )
        self._config = config
        self._core = PoolCore(ThreadEngine(config, thread_name_prefix))
        self._lock = threading.Lock()


RobustThreadPool.__module__ = "robustpool"  # as imported by users (see _errors)
RobustThreadPoolExecutor.__module__ = "robustpool"
