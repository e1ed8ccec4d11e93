#!/usr/bin/env python3
"""Run CPython's own ``multiprocessing.Pool`` tests against RobustPool (or the real Pool).

Usage::

    python tools/cpython_pool_tests.py [--pool robustpool|stdlib] [--json FILE] [-k PATTERN] ...

The tests come from the interpreter's own ``Lib/test/_test_multiprocessing.py``: every test
of ``_TestPool``, ``_TestPoolWorkerErrors`` and ``_TestPoolWorkerLifetime`` in the
*processes* flavour (the ``WithProcesses*`` classes CPython builds with
``install_tests_in_module_dict``), plus every module-level test that builds a pool (found
by reading the test's source, and the module-level functions it names, for ``Pool``).

With ``--pool robustpool`` (the default) every name a test builds a pool through points at
``robustpool.RobustPool``: ``multiprocessing.Pool``, ``multiprocessing.pool.Pool``
(``ThreadPool`` is not used by these tests and would break), a context's ``.Pool``,
``ProcessesMixin.Pool`` (``self.Pool``) and the ``Pool`` type of ``SyncManager``
(``manager.Pool``). Tests that start a fresh interpreter through
``test.support.script_helper`` get the same patch prepended to their ``-c`` code or run
their script through ``runpy`` after it. ``--pool stdlib`` runs the same tests against the
real ``multiprocessing.Pool``: the control.

Each test runs alone in a child process (its own class and module fixtures, like
``python -m unittest`` of that one id), in its own session. At ``--timeout`` the parent
asks the child's ``faulthandler`` for every thread's stack (SIGUSR1), kills the session,
and in any case removes whatever the test left running. A test that does not finish is
reported as HANG with the frames it was stuck in, and never stalls the run.

Tests that read a pool's private attributes (``p._pool``, ``_repopulate_pool``,
``_state``, ...) or need ``Pool(context=...)`` test ``multiprocessing.pool.Pool``'s
internals, not its API: they are listed as "not ours" and are not expected to pass.

The script doubles as the module the test classes live in (``cpython_pool_tests``, built
on first attribute access): it is importable from the child's ``sys.path``, so a class
pickled by reference (``p.apply(self._test_traceback)``) unpickles in a worker started
from a fresh interpreter too.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import faulthandler
import fnmatch
import importlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
import types
import unittest
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
TOOLS_DIR = SCRIPT.parent
REPO_ROOT = TOOLS_DIR.parent
HOST_MODULE = "cpython_pool_tests"

POOL_BASES = ("_TestPool", "_TestPoolWorkerErrors", "_TestPoolWorkerLifetime")
STATUSES = ("PASS", "FAIL", "ERROR", "SKIP", "HANG")
DEFAULT_TIMEOUT = 20.0
DUMP_GRACE = 2.0  # from the SIGUSR1 that dumps a hung test's threads to the SIGKILL
_PRIVATE = re.compile(r"^_(?!_)\w+$")
_POOL_WORD = re.compile(r"\bPool\b")

# -- the host module: CPython's test classes, installed on first use ---------------------

_start_method = "fork"
_installed = False
_install_lock = threading.Lock()


def _install() -> None:
    """Build CPython's test classes into this module, as ``test_multiprocessing_<sm>`` does."""
    global _installed
    with _install_lock:
        if _installed:
            return
        tm = importlib.import_module("test._test_multiprocessing")
        tm.install_tests_in_module_dict(globals(), _start_method)
        _installed = True


def __getattr__(name: str) -> Any:
    # Only the names install_tests_in_module_dict creates: test classes and the fixtures.
    if name.startswith("__") or name in globals():
        raise AttributeError(name)
    _install()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


# -- pointing every Pool name at RobustPool ----------------------------------------------


def patch_pools() -> None:
    """Make every name the tests build a pool through build a ``robustpool.RobustPool``.

    Must run before ``test._test_multiprocessing`` is imported (``ProcessesMixin.Pool`` is
    bound when that module runs); ``ProcessesMixin.Pool`` is set again in case it was not.
    """
    import multiprocessing
    import multiprocessing.context
    import multiprocessing.managers
    import multiprocessing.pool

    from robustpool import RobustPool

    def context_pool(
        self: object,
        processes: int | None = None,
        initializer: Any = None,
        initargs: Any = (),
        maxtasksperchild: int | None = None,
    ) -> RobustPool:
        return RobustPool(processes, initializer, initargs, maxtasksperchild)

    multiprocessing.Pool = RobustPool  # type: ignore[assignment]
    multiprocessing.pool.Pool = RobustPool  # type: ignore[misc,assignment]
    multiprocessing.context.BaseContext.Pool = context_pool  # type: ignore[method-assign,assignment]
    proxy = getattr(multiprocessing.managers, "PoolProxy")  # noqa: B009 (not in typeshed)
    multiprocessing.managers.SyncManager.register("Pool", RobustPool, proxytype=proxy)
    tm = sys.modules.get("test._test_multiprocessing")
    if tm is not None:
        tm.ProcessesMixin.Pool = staticmethod(RobustPool)


def _prelude() -> str:
    paths = [str(TOOLS_DIR), str(REPO_ROOT)]
    return f"import sys; sys.path.extend({paths!r}); import {HOST_MODULE}; {HOST_MODULE}.patch_pools()\n"


def _patched_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments of a fresh interpreter, with ``patch_pools()`` run before its code."""
    items = list(args)
    for i, arg in enumerate(items):
        if arg == "-c" and i + 1 < len(items):
            items[i + 1] = _prelude() + textwrap.dedent(str(items[i + 1]))
            return tuple(items)
        if arg in ("-X", "-W"):
            continue
        if i > 0 and items[i - 1] in ("-X", "-W"):
            continue
        if isinstance(arg, (str, os.PathLike)) and not str(arg).startswith("-"):
            code = _prelude() + f"import runpy; runpy.run_path({os.fspath(arg)!r}, run_name='__main__')\n"
            sys_argv = items[i + 1 :]
            if sys_argv:
                code = f"import sys; sys.argv[1:] = {[str(a) for a in sys_argv]!r}\n" + code
            return (*items[:i], "-c", code)
    return args


def _patch_script_helper() -> None:
    script_helper = importlib.import_module("test.support.script_helper")
    real = script_helper.run_python_until_end

    def run_python_until_end(*args: Any, **env_vars: Any) -> Any:
        return real(*_patched_args(args), **env_vars)

    setattr(script_helper, "run_python_until_end", run_python_until_end)  # noqa: B010


# -- which tests, and which are not ours -------------------------------------------------


@dataclass
class Selected:
    id: str
    not_ours: list[str] = field(default_factory=list)


def _source_tree(func: Any) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return None


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _is_module(mod: types.ModuleType, dotted: str | None) -> bool:
    if dotted is None:
        return False
    head, *rest = dotted.split(".")
    obj: Any = vars(mod).get(head)
    for part in rest:
        obj = getattr(obj, part, None)
    return isinstance(obj, types.ModuleType)


def _not_ours(mod: types.ModuleType, func: Any) -> list[str]:
    """Private pool attributes the test reads or writes, and ``context=`` it passes."""
    tree = _source_tree(func)
    if tree is None:
        return []
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _PRIVATE.match(node.attr):
            base = _dotted(node.value)
            if base in ("self", "cls") or _is_module(mod, base):
                continue
            found.append((node.lineno, node.col_offset, f"{base or '...'}.{node.attr}"))
        elif isinstance(node, ast.Call) and any(k.arg == "context" for k in node.keywords):
            found.append((node.lineno, node.col_offset, f"{_dotted(node.func) or 'Pool'}(context=...)"))
    names = [name for _, _, name in sorted(found)]
    return sorted(set(names), key=names.index)


def _builds_pool(mod: types.ModuleType, func: Any) -> bool:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    if _POOL_WORD.search(source):
        return True
    tree = _source_tree(func)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} if tree is not None else set()
    for name in names:
        helper = vars(mod).get(name)
        if isinstance(helper, types.FunctionType) and helper.__module__ == mod.__name__:
            with contextlib.suppress(OSError, TypeError):
                if _POOL_WORD.search(inspect.getsource(helper)):
                    return True
    return False


def discover() -> list[Selected]:
    """The ids (``Class.test_name``, as CPython's test_multiprocessing_* name them)."""
    tm = importlib.import_module("test._test_multiprocessing")
    loader = unittest.TestLoader()
    selected: list[Selected] = []
    for base_name in POOL_BASES:
        base = getattr(tm, base_name, None)
        if base is None or "processes" not in base.ALLOWED_TYPES:
            continue
        for name in loader.getTestCaseNames(base):
            selected.append(Selected(f"WithProcesses{base_name[1:]}.{name}", _not_ours(tm, getattr(base, name))))
    for cls_name, cls in vars(tm).items():
        if not isinstance(cls, type) or not issubclass(cls, unittest.TestCase) or issubclass(cls, tm.BaseTestCase):
            continue
        for name in loader.getTestCaseNames(cls):
            func = getattr(cls, name)
            if _builds_pool(tm, func):
                selected.append(Selected(f"{cls_name}.{name}", _not_ours(tm, func)))
    return selected


def _matches(test_id: str, patterns: list[str]) -> bool:
    """unittest's ``-k``: a substring, or an fnmatch pattern when it has a wildcard."""
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(test_id, p if "*" in p else f"*{p}*") for p in patterns)


# -- the child: one test, with its fixtures ----------------------------------------------


class _Recorder(unittest.TestResult):
    """Collects what happened to the one test, its fixtures included, and writes it down
    as soon as the test itself is over (so a hang in teardown or at exit is told apart)."""

    def __init__(self, test_id: str, partial: Path) -> None:
        super().__init__()
        self.test_id = test_id
        self.partial = partial
        self.outcome: str | None = None
        self.details: list[str] = []
        self.fixture_errors: list[str] = []
        self.started = time.monotonic()
        self.seconds = 0.0

    def _where(self, test: unittest.TestCase | Any) -> str:
        tid = test.id() if hasattr(test, "id") else str(test)
        return "test" if tid.endswith(self.test_id) else str(getattr(test, "description", tid))

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self.started = time.monotonic()

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        self.seconds = time.monotonic() - self.started
        if self.outcome is None:
            self.outcome = "PASS"
        self.write(self.partial, "after the test body, before its teardown")

    def _error(self, test: Any, kind: str, err: Any) -> None:
        text = "".join(traceback.format_exception(*err)) if isinstance(err, tuple) else str(err)
        where = self._where(test)
        if where == "test":
            if self.outcome not in ("FAIL", "ERROR"):
                self.outcome = kind
        else:
            self.fixture_errors.append(where)
        self.details.append(f"[{kind} in {where}]\n{text}")

    def addError(self, test: Any, err: Any) -> None:
        self._error(test, "ERROR", err)

    def addFailure(self, test: Any, err: Any) -> None:
        self._error(test, "FAIL", err)

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        if err is not None:
            kind = "FAIL" if issubclass(err[0], AssertionError) else "ERROR"
            text = "".join(traceback.format_exception(*err))
            if self.outcome not in ("FAIL", "ERROR"):
                self.outcome = kind
            self.details.append(f"[{kind} in {subtest}]\n{text}")

    def addSkip(self, test: Any, reason: str) -> None:
        if self._where(test) == "test" or self.outcome is None:
            self.outcome = "SKIP"
        self.details.append(f"[SKIP] {reason}")

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        self.outcome = "PASS"

    def addUnexpectedSuccess(self, test: Any) -> None:
        self.outcome = "FAIL"
        self.details.append("[FAIL] unexpected success")

    def status(self) -> str:
        if self.outcome is None:
            # Never started: a module or class fixture failed, or it was skipped.
            return "ERROR" if self.fixture_errors else "SKIP"
        if self.outcome == "PASS" and self.fixture_errors:
            return "ERROR"
        return self.outcome

    def write(self, path: Path, stage: str) -> None:
        data = {"status": self.status(), "seconds": self.seconds, "details": self.details, "stage": stage}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def _child(args: argparse.Namespace) -> int:
    global _start_method
    faulthandler.enable()
    # The parent asks for the dump with SIGUSR1 when the test runs out of time. Not
    # dump_traceback_later: its watchdog is a thread, and RobustPool forks its supervisor
    # only from a single-threaded owner, so a watchdog would change what is tested.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    result_path = Path(args.result)
    (result_path.parent / "main_thread").write_text(f"0x{threading.main_thread().ident:016x}")
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))  # robustpool from the checkout if it is not installed
    if args.pool == "robustpool":
        patch_pools()
    host = importlib.import_module(HOST_MODULE)  # this file, importable by that name
    setattr(host, "_start_method", args.start_method)  # noqa: B010
    host._install()
    if args.pool == "robustpool":
        host.patch_pools()  # ProcessesMixin.Pool, now that the test module is imported
        host._patch_script_helper()
    cls_name, method = args.child.split(".", 1)
    cls = getattr(host, cls_name)
    support = importlib.import_module("test.support")
    recorder = _Recorder(args.child, result_path.with_name("partial.json"))
    unittest.TestSuite([cls(method)]).run(recorder)
    if support.environment_altered:
        recorder.details.append("[note] the test altered the environment (dangling processes or threads)")
    recorder.write(result_path, "finished")
    return 0


# -- the parent: run every test in its own session, bounded ------------------------------


@dataclass
class Outcome:
    id: str
    status: str
    seconds: float
    summary: str = ""
    detail: str = ""
    not_ours: list[str] = field(default_factory=list)
    leftovers: int = 0
    output: str = ""


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            pids.append(int(entry))
    return pids


def _reap_session(sid: int, wait: float) -> int:
    """Wait for what the test started to go, then kill what is left (by pid); how many."""
    if not Path("/proc").is_dir():
        return 0
    deadline = time.monotonic() + wait
    left = _session_members(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _session_members(sid)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


def _essence(text: str) -> str:
    """The exception line of a traceback, with the test line that raised it."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    exc_idx = max((i for i, ln in enumerate(lines) if not ln.startswith((" ", "[", "Traceback"))), default=len(lines) - 1)
    exc_line = lines[exc_idx].strip()
    where = ""
    for i in range(exc_idx - 1, -1, -1):
        m = re.match(r'\s*File "([^"]+)", line (\d+), in (\w+)', lines[i])
        if m and "_test_multiprocessing" in m.group(1):
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            where = f" at {m.group(3)}:{m.group(2)} `{code}`"
            break
    return f"{exc_line[:300]}{where}"


def _hang_essence(output: str, main_ident: str) -> str:
    """The innermost frames of the main thread in faulthandler's dump."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", output)
    for block in blocks:
        if main_ident and main_ident.lower() in block.lower():
            frames = re.findall(r'File "([^"]+)", line (\d+) in (\w+)', block)
            return "main thread in " + " <- ".join(f"{Path(f).name}:{ln} {fn}" for f, ln, fn in frames[:4])
    return "no faulthandler dump of the main thread"


def _run_one(sel: Selected, args: argparse.Namespace) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="cpy-pool-") as tmp:
        tmpdir = Path(tmp)
        result = tmpdir / "result.json"
        log = tmpdir / "output.txt"
        cmd = [
            sys.executable,
            str(SCRIPT),
            "--child",
            sel.id,
            "--pool",
            args.pool,
            "--start-method",
            args.start_method,
            "--timeout",
            str(args.timeout),
            "--result",
            str(result),
        ]
        start = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True
            )
            killed = False
            try:
                proc.wait(args.timeout)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGUSR1)  # faulthandler: every thread's stack
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(DUMP_GRACE)
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        elapsed = time.monotonic() - start
        leftovers = _reap_session(proc.pid, 3.0)
        output = log.read_text(errors="replace")
        main_ident = (tmpdir / "main_thread").read_text() if (tmpdir / "main_thread").exists() else ""
        partial = tmpdir / "partial.json"
        outcome = Outcome(sel.id, "ERROR", elapsed, not_ours=sel.not_ours, leftovers=leftovers, output=output[-6000:])
        if result.exists() and proc.returncode == 0:
            data = json.loads(result.read_text())
            outcome.status = data["status"]
            outcome.detail = "\n".join(data["details"])
            problems = [d for d in data["details"] if d.startswith(("[FAIL", "[ERROR"))]
            if problems:
                outcome.summary = _essence(problems[0])
            elif outcome.status == "SKIP":
                outcome.summary = next((d for d in data["details"] if d.startswith("[SKIP")), "")
        elif killed:
            outcome.status = "HANG"
            outcome.detail = output
            stage = ""
            if partial.exists():
                early = json.loads(partial.read_text())
                stage = f"the test body had ended as {early['status']}; hung in its teardown or at exit; "
            outcome.summary = f"no result after {args.timeout:g} s; {stage}{_hang_essence(output, main_ident)}"
        else:
            outcome.detail = output
            outcome.summary = f"the child exited with code {proc.returncode} and no result: {_essence(output)}"
        if leftovers:
            outcome.summary += f" [{leftovers} process(es) left running, killed]"
        return outcome


def _line(o: Outcome) -> str:
    text = f"{o.status:<5} {o.id} ({o.seconds:.1f}s)"
    if o.not_ours:
        text += f" [not ours: {', '.join(o.not_ours)}]"
    if o.status != "PASS" and o.summary:
        text += f"\n      {o.summary}"
    return text


def _parent(args: argparse.Namespace) -> int:
    selected = [s for s in discover() if _matches(s.id, args.k) and (not args.id or s.id in args.id)]
    if not selected:
        print("no test matches", file=sys.stderr)
        return 2
    version = sys.version.split()[0]
    what = f"start method {args.start_method}, {len(selected)} tests, {args.jobs} at a time"
    print(f"# CPython {version} multiprocessing Pool tests against {args.pool}, {what}", flush=True)
    outcomes: list[Outcome] = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        futures = [ex.submit(_run_one, s, args) for s in selected]
        for fut in futures:
            o = fut.result()
            outcomes.append(o)
            print(_line(o), flush=True)
            if args.verbose and o.status not in ("PASS", "SKIP"):
                print(textwrap.indent(o.detail.rstrip(), "      | "), flush=True)
    passed = sum(o.status == "PASS" for o in outcomes)
    not_ours = [o for o in outcomes if o.not_ours]
    if not_ours:
        print("not ours (use multiprocessing.pool.Pool's private attributes or Pool(context=...); not expected to pass):")
        for o in not_ours:
            print(f"  {o.status:<5} {o.id}: {', '.join(o.not_ours)}")
    ours = [o for o in outcomes if not o.not_ours]
    counts = ", ".join(f"{s} {sum(o.status == s for o in outcomes)}" for s in STATUSES)
    ours_passed = sum(o.status == "PASS" for o in ours)
    print(f"counts: {counts}; without the not-ours tests, {ours_passed} of {len(ours)} pass")
    print(f"passed {passed} of {len(outcomes)}")
    if args.json:
        report = {
            "python": sys.version.split()[0],
            "pool": args.pool,
            "start_method": args.start_method,
            "timeout": args.timeout,
            "passed": passed,
            "total": len(outcomes),
            "results": [asdict(o) for o in outcomes],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if passed == len(outcomes) else 1


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--pool", choices=("robustpool", "stdlib"), default="robustpool", help="what multiprocessing.Pool is (default robustpool)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument(
        "-k",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only tests whose id matches (substring or fnmatch; repeatable)",
    )
    p.add_argument("--id", action="append", default=[], metavar="ID", help="only this test (exact id; repeatable)")
    p.add_argument("-j", "--jobs", type=int, default=2, help="tests run at once (default 2)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds a test may take before it is a HANG (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--start-method",
        choices=("fork", "spawn", "forkserver"),
        default="fork",
        help="multiprocessing start method the test module sets (default fork, as test_multiprocessing_fork)",
    )
    p.add_argument("--list", action="store_true", help="list the selected tests and what makes a test not ours, and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print the whole output of every test that does not pass")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.child:
        try:
            return _child(args)
        except BaseException:
            traceback.print_exc()
            return 3
    try:
        importlib.import_module("test._test_multiprocessing")
    except ImportError as exc:  # unittest.SkipTest is not an ImportError: let it say why
        print(f"cannot import CPython's test._test_multiprocessing: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for s in discover():
            if _matches(s.id, args.k) and (not args.id or s.id in args.id):
                print(s.id + (f"  [not ours: {', '.join(s.not_ours)}]" if s.not_ours else ""))
        return 0
    return _parent(args)


if __name__ == "__main__":
    sys.exit(main())
