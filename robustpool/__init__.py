"""robustpool: a fault-tolerant process pool with the API you already know.

A supervisor process watches every worker and turns each death into one error attributed
to the task that was running; closures travel with cloudpickle; worker tracebacks come back
real (tblib); ``imap`` iterators clean up every result the consumer never received.

Public names are imported on first use (PEP 562): a supervisor started as a fresh
interpreter imports only the modules it needs, which keeps its start-up short.

PYTEST_DONT_REWRITE: the pytest plugin's entry point would otherwise have pytest rewrite this
namespace (and add its helpers to it) in every test session.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._errors import (
        InitializerError,
        PoolTerminatedError,
        RemoteTaskError,
        RobustPoolError,
        TaskSerializationError,
        TaskTimeoutError,
        WorkerLostError,
        WorkerStartError,
    )
    from ._executor import MapIterator, RobustExecutor
    from ._jobs._gather import MapResult
    from ._jobs._iterators import IMapIterator
    from ._jobs._single import AsyncResult, RobustFuture
    from ._pool import RobustPool
    from ._scope import Scope, multi_scope
    from ._stats import PoolStats, WorkerStats
    from ._threadpool import RobustThreadPool, RobustThreadPoolExecutor

_WHERE = {
    "AsyncResult": "._jobs._single",
    "IMapIterator": "._jobs._iterators",
    "InitializerError": "._errors",
    "MapIterator": "._executor",
    "MapResult": "._jobs._gather",
    "PoolStats": "._stats",
    "PoolTerminatedError": "._errors",
    "RemoteTaskError": "._errors",
    "RobustExecutor": "._executor",
    "RobustFuture": "._jobs._single",
    "RobustPool": "._pool",
    "RobustPoolError": "._errors",
    "RobustThreadPool": "._threadpool",
    "RobustThreadPoolExecutor": "._threadpool",
    "Scope": "._scope",
    "TaskSerializationError": "._errors",
    "TaskTimeoutError": "._errors",
    "WorkerLostError": "._errors",
    "WorkerStartError": "._errors",
    "WorkerStats": "._stats",
    "multi_scope": "._scope",
}

__all__ = (
    "AsyncResult",
    "IMapIterator",
    "InitializerError",
    "MapIterator",
    "MapResult",
    "PoolStats",
    "PoolTerminatedError",
    "RemoteTaskError",
    "RobustExecutor",
    "RobustFuture",
    "RobustPool",
    "RobustPoolError",
    "RobustThreadPool",
    "RobustThreadPoolExecutor",
    "Scope",
    "TaskSerializationError",
    "TaskTimeoutError",
    "WorkerLostError",
    "WorkerStartError",
    "WorkerStats",
    "multi_scope",
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'robustpool' has no attribute {name!r}")
    value = getattr(_importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
