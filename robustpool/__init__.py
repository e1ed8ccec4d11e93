"""robustpool: a fault-tolerant process pool with the API you already know.

A supervisor process watches every worker and turns each death into one error attributed
to the task that was running; closures travel with cloudpickle; worker tracebacks come back
real (tblib); ``imap`` iterators clean up every result the consumer never received.
"""

from ._dispatcher import PoolStats, WorkerStats
from ._errors import (
    InitializerError,
    PoolTerminatedError,
    RemoteTaskError,
    RobustPoolError,
    TaskSerializationError,
    TaskTimeoutError,
    WorkerLostError,
)
from ._pool import RobustPool
from ._results import AsyncResult, IMapIterator, MapResult

__all__ = [
    "AsyncResult",
    "IMapIterator",
    "InitializerError",
    "MapResult",
    "PoolStats",
    "PoolTerminatedError",
    "RemoteTaskError",
    "RobustPool",
    "RobustPoolError",
    "TaskSerializationError",
    "TaskTimeoutError",
    "WorkerLostError",
    "WorkerStats",
]

__version__ = "0.1.0"
