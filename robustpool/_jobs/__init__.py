"""Jobs: the owner-side state of each call, and the result objects users hold.

Each call has a *job* (what an engine reports to: see ``robustpool._engine.Job``) and a
public result (``AsyncResult``, ``MapResult``, ``IMapIterator``, a ``Future``) that wraps it
and shows only the API users know, so nobody can ``deliver`` to a result by mistake.

* ``_single``: one item (``apply_async``; ``submit``'s futures).
* ``_gather``: n items gathered into one list (``map_async``).
* ``_stream``: a lazy, windowed stream of results in order or as they come (``imap``).

Threads: ``claim``/``deliver``/``fail``/``drop``/``flush`` run on the engine's thread (or,
for items that cannot even be handed over, on the calling thread); everything else runs on
the user's threads. Each job guards its state with its own lock; user callbacks and
cleanups never run while that lock is held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import multiprocessing

log = logging.getLogger("robustpool")

Cleanup = Callable[[Any], object]


def run_callback(fn: Callable[[Any], object], arg: Any, what: str) -> None:
    try:
        fn(arg)
    except BaseException:
        # A callback runs on the engine's thread; letting it raise would stop results for
        # everyone. It is logged with its traceback instead.
        log.exception("robustpool: the %s raised; other results are unaffected", what)


def run_cleanups(cleanup: Cleanup, values: Iterable[Any]) -> list[Exception]:
    """Call ``cleanup`` on every value; a failure never stops the others. Errors are logged
    and returned."""
    errors: list[Exception] = []
    for value in values:
        try:
            cleanup(value)
        except Exception as exc:
            log.error("robustpool: cleanup(%.80r) raised", value, exc_info=exc)
            errors.append(exc)
    return errors


def timeout_error() -> multiprocessing.TimeoutError:
    import multiprocessing  # at the first timeout: `import robustpool` does not load it

    return multiprocessing.TimeoutError()
