"""The API conformance suite: every test here runs on every cell of facade x engine.

In the manner of CPython's executor test mixins (``test_concurrent_futures``: one test body,
one mixin per executor type and start method), but with pytest parameters instead of
classes: a test asks for ``pool_factory`` and builds its pools with it, never with a facade
by name::

    def test_map(pool_factory: PoolFactory) -> None:
        with pool_factory(2) as pool:
            assert pool.map(_square, range(3)) == [0, 1, 4]

``pool_factory`` is parametrized over ``cells.CELLS``, one parameter per cell, with ids
``<facade>-<engine>``. There are four cells: ``RobustPool-process``,
``RobustExecutor-process``, ``RobustThreadPool-thread`` and
``RobustThreadPoolExecutor-thread``. The factory takes RobustPool's constructor arguments
(``cells.PoolFactory``) and hands them to the cell's ``build``, which makes the pool; tests
own their pools as before (``with``, or ``terminate()`` in a ``finally``): the factory
cleans up nothing, so the leak check of ``tests/conftest.py`` still catches a pool left
running.

Markers (registered in pyproject.toml), read when the fixture is set up:

* ``@pytest.mark.each_start_method``: run once per start method of the cell (ids
  ``RobustPool-process-fork``, ``RobustPool-process-spawn``, ``RobustExecutor-process-fork``,
  ...), once on a cell that has none. For tests whose functions, arguments and exceptions
  must also survive the trip to a fresh interpreter (spawn imports them by reference from
  ``workers``). Other tests run once, with the engine's default (for the process engine
  under pytest that is spawn: pytest's faulthandler watchdog is a second thread, and a
  threaded owner does not fork).
* ``@pytest.mark.requires(Feature.X, ...)``: the test needs these ``cells.Feature`` values
  (POOL_API, EXECUTOR_API, KILL, RECYCLE, MEMORY_LIMIT, PICKLES, PROCESSES); on a cell that
  lists one of them in ``cannot`` it is skipped, and the skip reason is the cell's.
* ``@pytest.mark.process``: the test is inherently about worker processes (pids,
  signals): the same as ``requires(Feature.PROCESSES)``, spelled so it stands out. It
  runs on every cell whose workers are processes (both cells today).

Every test here declares what it needs beyond running tasks, ``submit`` and ``with``: the
modules whose tests call Pool-only methods (apply*, map returning a list, imap*, close,
join, terminate, ``processes``) mark ``requires(Feature.POOL_API)`` once, in
``pytestmark``; the rest is marked test by test. A test that passes an option tied to a
feature (``cells.OPTION_NEEDS``: maxtasksperchild, task_timeout, memory_limit), by keyword
or by position, without declaring that feature fails at once, even on a cell that has it,
so the declarations stay complete. ``start_method`` and ``context`` are not factory
arguments: the cell supplies how its workers start, and a test that needs a particular
multiprocessing context is process-specific: it builds its pool itself, outside the grid.

The cells:

* RobustPool (``multiprocessing.Pool``): ``Cell("RobustPool", "process", build,
  start_methods=("fork", "spawn"), cannot={Feature.EXECUTOR_API: ...})``, ``build`` making
  ``RobustPool(*args, start_method=..., **kwargs)``.
* RobustExecutor (``concurrent.futures``): ``Cell("RobustExecutor", "process", build,
  start_methods=("fork", "spawn"), cannot={Feature.POOL_API: "a concurrent.futures
  executor has no apply/imap/close/join"})``, ``build`` turning ``processes`` into
  ``max_workers``, ``maxtasksperchild`` into ``max_tasks_per_child`` and the start method
  into ``start_method=`` (the other options have the same names on both). Only the tests
  that need no POOL_API (``test_submit``: ``submit``, ``as_completed``, ``wait``,
  ``cancel`` and ``with``) run on it; everything else here is skipped there by its
  ``pytestmark``. Its executor is not a ``cells.Pool`` statically: its ``build`` returns it
  as one (``cast``), and the POOL_API skip is what keeps the Pool-only tests off it. Its own
  surface (``map`` as a lazy iterator, ``shutdown``, ``cancel()`` of a running future, the
  crash matrix through ``submit``) is tested in ``tests/executor``, modelled on CPython's
  ``test_concurrent_futures``; a test added here for that surface declares
  ``requires(Feature.EXECUTOR_API)``, which the RobustPool cell lists in ``cannot``.

The thread cells: ``Cell("RobustThreadPool", "thread", ...)`` and
``Cell("RobustThreadPoolExecutor", "thread", ...)``, with no start methods, and ``cannot``
giving a reason for KILL (a running thread cannot be stopped), RECYCLE and MEMORY_LIMIT
(refused options), PICKLES (objects are shared, never pickled), PROCESSES (no worker pids;
a signal would hit the owner), and POOL_API or EXECUTOR_API. ``cells.Pool`` is
``RobustPool | RobustThreadPool``, so mypy checks the tests against both. What only threads
do (terminate without stopping a running call, objects by reference, refusals) is tested in
``tests/threads``.

Adding a cell is one entry in ``cells.CELLS``; no test changes:

* A Dask engine: one cell per facade that can run on it, e.g. ``Cell("RobustPool",
  "dask", build)``, ``build`` handing the facade that engine (or a client) however the
  facade takes it, and ``cannot`` at least PROCESSES (workers may be remote: no local
  pids, no signals) and KILL if a running task cannot be stopped.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from .cells import CELLS, OPTION_NEEDS, Cell, Feature, Pool, PoolFactory


@dataclass(frozen=True)
class Case:
    """One parameter of ``pool_factory``: a cell, and the start method for this run."""

    cell: Cell
    start_method: str | None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pool_factory" not in metafunc.fixturenames:
        return
    each = metafunc.definition.get_closest_marker("each_start_method") is not None
    params: list[Any] = []
    for cell in CELLS:
        if each and cell.start_methods:
            params += [pytest.param(Case(cell, m), id=f"{cell.id}-{m}") for m in cell.start_methods]
        else:
            params.append(pytest.param(Case(cell, None), id=cell.id))
    metafunc.parametrize("pool_factory", params, indirect=True)


def _needed(node: pytest.Item) -> Feature:
    """The features a test declares with ``requires`` and ``process`` markers."""
    needed = Feature(0)
    for mark in node.iter_markers("requires"):
        for feature in mark.args:
            if not isinstance(feature, Feature):
                raise TypeError(f"@pytest.mark.requires takes cells.Feature values, not {feature!r}")
            needed |= feature
    if node.get_closest_marker("process") is not None:
        needed |= Feature.PROCESSES
    return needed


_SIGNATURE = inspect.signature(PoolFactory.__call__)


def _build(case: Case, declared: Feature, *args: Any, **kwargs: Any) -> Pool:
    try:
        given = _SIGNATURE.bind(None, *args, **kwargs).arguments  # None stands for self
    except TypeError as exc:
        pytest.fail(f"pool_factory takes cells.PoolFactory's arguments ({exc}); the cell picks the start method")
    for option, need in OPTION_NEEDS.items():
        if given.get(option) is not None and not need & declared:
            pytest.fail(f"{option}= needs Feature.{need.name}: mark the test @pytest.mark.requires(Feature.{need.name})")
    return case.cell.build(*args, start_method=case.start_method, **kwargs)


@pytest.fixture
def pool_cell(request: pytest.FixtureRequest) -> Cell:
    """The cell of this run's ``pool_factory`` (for a test whose bound depends on it)."""
    case: Case = request.node.callspec.params["pool_factory"]
    return case.cell


@pytest.fixture
def pool_factory(request: pytest.FixtureRequest) -> PoolFactory:
    """Builds pools of this run's cell (see the module docstring)."""
    case: Case = request.param
    declared = _needed(request.node)
    reason = case.cell.lacking(declared)
    if reason is not None:
        pytest.skip(reason)
    factory: PoolFactory = functools.partial(_build, case, declared)
    return factory
