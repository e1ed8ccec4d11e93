"""The pytest plugin: run users' tests under ``robustpool.testing.chaos``.

Registered through the ``pytest11`` entry point, so it loads wherever robustpool is
installed, and does nothing unless asked:

* ``pytest --robustpool-chaos=SEED`` runs every test under chaos, each with its own seed
  derived from SEED and the test's id (so one test replays alone with the same command);
  ``--robustpool-chaos-rates=kill=0.1,exit=0,phases=before+after`` changes the rates;
* ``@pytest.mark.robustpool_chaos(seed=..., kill=...)`` runs one test under chaos (its
  arguments are those of ``chaos()``);
* the ``robustpool_chaos`` fixture does the same and gives the test its ChaosReport.

A run starts before the test's fixtures are set up (so pools they make are covered) and ends
when the test's call does; a broken invariant fails the test with the report, and every
failing test run under chaos shows the seed and the command that replays it.

This module imports only pytest at load time: a test session that does not ask for chaos
pays nothing for it.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Generator
from typing import Any

import pytest

_RUN = pytest.StashKey[Any]()  # the test's live ChaosRun
_REPLAY = pytest.StashKey[str]()
_TOTALS = pytest.StashKey[dict[str, Any]]()  # the session's sums, for its summary line
_RATE_NAMES = ("kill", "segfault", "exit", "delay", "hang", "idle_kill", "max_delay")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustpool", "robustpool chaos (worker deaths injected into your tests' pools)")
    group.addoption(
        "--robustpool-chaos",
        metavar="SEED",
        type=int,
        default=None,
        help="run every test under robustpool.testing.chaos, seeded from SEED and the test's id",
    )
    group.addoption(
        "--robustpool-chaos-rates",
        metavar="SPEC",
        default=None,
        help="chaos rates, e.g. kill=0.1,segfault=0,exit=0.02,delay=0,idle_kill=0.05,phases=before+after",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "robustpool_chaos(seed=None, **rates): run this test under robustpool.testing.chaos (its arguments are chaos()'s)",
    )
    spec = config.getoption("--robustpool-chaos-rates")
    if spec is not None:
        parse_rates(spec)  # a bad spec is a usage error at once, not a failure in every test


def parse_rates(spec: str) -> dict[str, Any]:
    """``kill=0.1,phases=before+after`` as chaos()'s keyword arguments."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise pytest.UsageError(f"--robustpool-chaos-rates: {part!r} is not name=value")
        if name == "phases":
            out[name] = tuple(p for p in value.replace("/", "+").split("+") if p)
        elif name in _RATE_NAMES:
            try:
                out[name] = float(value)
            except ValueError:
                raise pytest.UsageError(f"--robustpool-chaos-rates: {name}={value!r} is not a number") from None
        else:
            raise pytest.UsageError(f"--robustpool-chaos-rates: unknown rate {name!r} (known: {', '.join(_RATE_NAMES)}, phases)")
    return out


def seed_for(seed: int, nodeid: str) -> int:
    """The seed of one test in a ``--robustpool-chaos=SEED`` session."""
    digest = hashlib.blake2b(f"{seed}:{nodeid}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _settings(item: pytest.Item) -> tuple[int, dict[str, Any], str] | None:
    """(seed, chaos() keyword arguments, replay command) if this test runs under chaos."""
    config = item.config
    session_seed: int | None = config.getoption("--robustpool-chaos")
    spec: str | None = config.getoption("--robustpool-chaos-rates")
    marker = item.get_closest_marker("robustpool_chaos")
    wants_fixture = "robustpool_chaos" in getattr(item, "fixturenames", ())
    if session_seed is None and marker is None and not wants_fixture:
        return None
    kwargs: dict[str, Any] = parse_rates(spec) if spec else {}
    command = ["pytest"]
    if session_seed is not None:
        command.append(f"--robustpool-chaos={session_seed}")
        if spec:
            command.append(f"--robustpool-chaos-rates={spec}")
    seed = seed_for(0 if session_seed is None else session_seed, item.nodeid)
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(f"{item.nodeid}: robustpool_chaos takes keyword arguments only")
        given = dict(marker.kwargs)
        if given.get("seed") is not None:
            seed = given["seed"]
        given.pop("seed", None)
        kwargs.update(given)
    command.append(item.nodeid)
    return seed, kwargs, " ".join(shlex.quote(c) for c in command)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    settings = _settings(item)
    if settings is not None:
        from ._session import new_run

        seed, kwargs, replay = settings
        kwargs.pop("check", None)  # the plugin always checks: it fails the test
        run = new_run(seed, replay, **kwargs)
        item.stash[_RUN] = run
        item.stash[_REPLAY] = f"seed {seed}; replay: {replay}"
        run.start()
    return (yield)


@pytest.fixture
def robustpool_chaos(request: pytest.FixtureRequest) -> Any:
    """The test's ChaosReport: asking for this fixture runs the test under chaos (as the
    ``robustpool_chaos`` marker does; the marker's arguments set the rates)."""
    run = request.node.stash.get(_RUN, None)
    if run is None:  # pragma: no cover - the setup hook starts a run for every test asking
        raise RuntimeError("robustpool_chaos: no chaos run for this test")
    return run.report


def _finish(item: pytest.Item) -> Any:
    run = item.stash.get(_RUN, None)
    if run is None or not run.active:
        return None
    report = run.finish()
    totals = item.config.stash.setdefault(_TOTALS, {"tests": 0, "items": 0, "broken": 0, "injected": {}})
    totals["tests"] += 1
    totals["items"] += report.items
    totals["broken"] += not report.ok
    for kind, n in report.injected.items():
        totals["injected"][kind] = totals["injected"].get(kind, 0) + n
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        result = yield
    finally:
        report = _finish(item)
    if report is not None and not report.ok:
        pytest.fail(report.summary(), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    _finish(item)  # the call never ran (its setup failed): end the run, nothing to check
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    where = item.stash.get(_REPLAY, None)
    if where is not None and report.failed:
        run = item.stash.get(_RUN, None)
        text = run.report.summary() if run is not None and not run.active else where
        report.sections.append(("robustpool chaos", text))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    totals = config.stash.get(_TOTALS, None)
    if totals is None:
        return
    injected = ", ".join(f"{k} {v}" for k, v in sorted(totals["injected"].items())) or "none"
    seed = config.getoption("--robustpool-chaos")
    where = f"seed {seed}, " if seed is not None else ""
    terminalreporter.write_line(
        f"robustpool chaos: {where}{totals['tests']} test(s) under chaos, {totals['items']} items, "
        f"injected: {injected}; {totals['broken']} test(s) broke an invariant"
    )
