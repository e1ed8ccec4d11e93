"""The configuration every facade validates its parameters with: one rule for error types.

A value of the wrong type is a ``TypeError``, a value of the right type out of range a
``ValueError``; a ``maxtasksperchild`` of the wrong type is both (``multiprocessing.Pool``
raises ``ValueError`` there, and CPython's own Pool tests check it). No process is started.
"""

from __future__ import annotations

import math
import multiprocessing
from typing import Any

import pytest

from robustpool._config import PoolConfig
from robustpool._core import refuse_unsupported
from robustpool._engine import Capability

WRONG_TYPE = [
    ("processes", "4"),
    ("processes", 2.0),
    ("processes", True),
    ("initializer", 5),
    ("initargs", 5),
    ("task_timeout", "1"),
    ("retries", 1.5),
    ("retries", "1"),
    ("memory_limit", 1.5),
    ("memory_limit", True),
    ("start_method", 1),
    ("buffersize", 2.5),
    ("close_timeout", "10"),
    ("context", "fork"),
]
OUT_OF_RANGE = [
    ("processes", 0),
    ("processes", 10**6),
    ("task_timeout", 0),
    ("task_timeout", -1),
    ("task_timeout", math.nan),
    ("task_timeout", 1e10),
    ("retries", -1),
    ("memory_limit", 0),
    ("memory_limit", "12 parsecs"),
    ("start_method", "vfork"),
    ("buffersize", 0),
    ("close_timeout", 0),
    ("maxtasksperchild", 0),
]


def _build(name: str, value: Any) -> PoolConfig:
    if name == "maxtasksperchild":
        return PoolConfig.build(1, maxtasksperchild=value)
    if name in ("processes", "initializer", "initargs", "context"):
        return PoolConfig.build(**{name: value})
    return PoolConfig.build(1, **{name: value})


@pytest.mark.parametrize(("name", "value"), WRONG_TYPE, ids=[f"{n}={v!r}" for n, v in WRONG_TYPE])
def test_a_wrong_type_is_a_type_error(name: str, value: object) -> None:
    with pytest.raises(TypeError, match=name if name != "processes" else "processes"):
        _build(name, value)


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE, ids=[f"{n}={v!r}" for n, v in OUT_OF_RANGE])
def test_a_value_out_of_range_is_a_value_error(name: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        _build(name, value)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize("value", ["12", 0.5])
def test_maxtasksperchild_of_the_wrong_type_is_both_as_in_multiprocessing(value: object) -> None:
    with pytest.raises(TypeError) as info:
        _build("maxtasksperchild", value)
    assert isinstance(info.value, ValueError)


def test_defaults_and_no_limit_values() -> None:
    config = PoolConfig.build(2, task_timeout=math.inf, close_timeout=None)
    assert config.processes == 2 and config.task_timeout == 0.0 and config.close_timeout == math.inf
    assert config.buffersize == 64 and config.retries == 0 and config.memory_limit is None
    assert PoolConfig.build(4, memory_limit="1.5G").memory_limit == int(1.5 * 2**30)
    assert PoolConfig.build(1, initargs=[1, 2]).initargs == (1, 2)


def test_a_context_picks_the_supervisors_start() -> None:
    assert PoolConfig.build(1, context=multiprocessing.get_context("fork")).start_method == "fork"
    assert PoolConfig.build(1, context=multiprocessing.get_context("spawn")).start_method == "spawn"
    assert PoolConfig.build(1, context=multiprocessing.get_context("forkserver")).start_method == "forkserver"
    with pytest.raises(ValueError, match="contradicts"):
        PoolConfig.build(1, context=multiprocessing.get_context("spawn"), start_method="fork")


@pytest.mark.parametrize(
    ("name", "value", "needed"),
    [("task_timeout", 1.0, Capability.KILL_ON_TIMEOUT), ("memory_limit", "1G", Capability.MEMORY_LIMIT),
     ("maxtasksperchild", 3, Capability.RECYCLE)],
)  # fmt: skip
def test_a_parameter_the_engine_cannot_enforce_is_refused(name: str, value: object, needed: Capability) -> None:
    config = _build(name, value)
    everything = Capability.KILL_ON_TIMEOUT | Capability.MEMORY_LIMIT | Capability.RECYCLE | Capability.PIDS
    refuse_unsupported(config, everything, "an engine")  # all there: nothing to refuse
    with pytest.raises(ValueError, match=name):
        refuse_unsupported(config, everything & ~needed, "a thread engine")
    refuse_unsupported(PoolConfig.build(1), Capability.NONE, "a thread engine")  # nothing asked
