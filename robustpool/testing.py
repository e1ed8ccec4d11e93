"""Chaos for your own pipelines: worker deaths injected into your tasks, invariants checked.

Under :func:`chaos`, every robustpool process pool (``RobustPool``, ``RobustExecutor``) that
runs work -- alive when the run starts or created during it -- injects faults into *your*
tasks at the rates you give: the worker is SIGKILLed, segfaults or calls ``os._exit()``
before, during or after your function; results come late; a worker is killed between tasks;
a call with a ``task_timeout`` hangs. Faults are planned in the owner from the seed and each
item's serial number, so a seed replays a run; each fires on an item's first attempt only, so
``retries=`` heals it. At the end the run checks what robustpool can check on your behalf and
lists what broke in :attr:`ChaosReport.violations`:

* every item got exactly one outcome (a value, an error, or dropped when cancelled);
* every result of an ``imap``/``imap_unordered`` with a ``cleanup`` was handed to the
  consumer or passed to the cleanup, exactly once, once its iterator closed;
* no worker, supervisor or subprocess of a pool that ended is left, no file descriptor
  more in the owner, nothing in ``/dev/shm`` that our processes created.

Your test asserts the rest (every item is a result or an attributed error, no temp file
left). ``pytest --robustpool-chaos=SEED`` runs a whole test suite this way (see the plugin,
``robustpool._chaos._pytest``). Thread pools are not covered: a fault there would kill the
owner itself.

Example::

    with robustpool.testing.chaos(seed=1, kill=0.05) as report:
        with RobustPool(2, retries=1) as pool:
            assert pool.map(square, range(100)) == [x * x for x in range(100)]
    print(report.injected)   # e.g. {'kill': 4}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._chaos._faults import PHASES
from ._chaos._session import ChaosInvariantError, ChaosReport, new_run

__all__ = ("ChaosInvariantError", "ChaosReport", "chaos")


@contextmanager
def chaos(
    seed: int = 0,
    *,
    kill: float = 0.05,
    segfault: float = 0.01,
    exit: float = 0.01,
    delay: float = 0.02,
    hang: float = 0.0,
    idle_kill: float = 0.0,
    phases: Sequence[str] = PHASES,
    max_delay: float = 0.05,
    pools: Sequence[Any] | None = None,
    check: bool = True,
) -> Iterator[ChaosReport]:
    """Inject faults into the tasks of robustpool's process pools while the block runs.

    :param seed: the plan's seed (an int): the same seed over the same program gives the same
        items the same faults.
    :param kill: the share of items whose worker is SIGKILLed (as by the OOM killer).
    :param segfault: the share whose worker segfaults (SIGSEGV, as a crashing C extension).
    :param exit: the share whose worker calls ``os._exit(71)`` (no exception, no unwinding).
    :param delay: the share whose result comes up to ``max_delay`` seconds late.
    :param hang: the share of items of calls with a ``task_timeout`` that never return (the
        pool's timeout must kill them); items of calls without one are never picked.
    :param idle_kill: the chance, at each chunk handed to a pool, that an idle worker is
        SIGKILLed (between tasks: it must cost nothing but a replacement).
    :param phases: when a death fires: ``"before"`` your function runs, ``"during"`` it (a
        timer in the worker, within 20 ms; if your function returns first, right then), or
        ``"after"`` it returned (its result dies with the worker, whatever it did outside).
        A death "before" first sends the results the worker finished and still holds, so it
        costs that item only; "during" and "after" take those along, as a real death does.
    :param max_delay: the longest delay, in seconds.
    :param pools: only these pools (and executors); default: every process pool alive when
        the block starts or created inside it.
    :param check: raise ChaosInvariantError at the end of the block if an invariant broke
        (not when the block itself raised: its exception gets the report as a note).
    :returns: a context manager giving the ChaosReport, filled in at the end of the block.
    :raises ValueError: a rate is not a probability, the rates add up to more than 1, or a
        phase is unknown.
    :raises TypeError: ``seed`` is not an int, or ``pools`` holds something that is not a pool.
    :raises RuntimeError: a chaos run is already on (runs do not nest).
    """
    replay = f"robustpool.testing.chaos(seed={seed}, kill={kill}, segfault={segfault}, exit={exit}, delay={delay}"
    replay += f", hang={hang}, idle_kill={idle_kill}, phases={tuple(phases)!r})"
    run = new_run(
        seed, replay, pools, phases,
        kill=kill, segfault=segfault, exit=exit, delay=delay, hang=hang, idle_kill=idle_kill, max_delay=max_delay,
    )  # fmt: skip
    run.start()
    try:
        yield run.report
    except BaseException as exc:
        report = run.finish()
        exc.add_note(report.summary())
        raise
    report = run.finish()
    if check:
        report.check()


ChaosReport.__module__ = __name__
ChaosInvariantError.__module__ = __name__
