"""Progress bars for the calls of many items (``progress=`` on map, starmap, imap, ...).

A bar counts items as they *complete* (a value or an error arrives in the owner), not as they
are dispatched, and the calls it is given to report item by item (their chunks stream), so it
moves one item at a time rather than by whole chunks. Failures show in the postfix. It is
tqdm's ``tqdm.auto`` (a widget in notebooks), imported only when a bar is asked for: tqdm is
an optional dependency (``pip install 'robustpool[progress]'``).

Updates come from the engine's thread (a dispatcher, or a pool's threads); ``Bar`` serializes
them, and closes its bar once, whoever ends the call first (the last item, an error that ends
it, ``break``, closing the iterator, terminate).
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Mapping
from typing import Any

# What ``progress=`` takes: True, a dict of tqdm options (``total`` overrides the length,
# for generators), or a tqdm instance of your own (updated, never closed by us).
ProgressArg = Any


class Bar:
    """One call's bar: counts completed and failed items."""

    __slots__ = ("_bar", "_closed", "_failed", "_lock", "_owned")

    def __init__(self, bar: Any, owned: bool) -> None:
        self._bar = bar
        self._owned = owned
        self._lock = threading.Lock()
        self._failed = 0
        self._closed = False

    def done(self, count: int) -> None:
        with self._lock:
            if not self._closed:
                self._bar.update(count)

    def failed(self, count: int = 1) -> None:
        with self._lock:
            if not self._closed:
                self._failed += count
                self._bar.set_postfix(failed=self._failed, refresh=False)
                self._bar.update(count)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owned:
                self._bar.close()
            else:
                self._bar.refresh()  # the caller's own bar: theirs to close


def length_of(iterable: object) -> int | None:
    """The number of items, if the iterable knows it (``len`` or ``__length_hint__``)."""
    try:
        hint = operator.length_hint(iterable, -1)
    except Exception:  # a __length_hint__ that raises: no total
        return None
    return hint if hint >= 0 else None


def make_bar(progress: ProgressArg, total: int | None, desc: str) -> Bar | None:
    """The bar ``progress=`` asks for (None for None/False); errors at the call: a value of
    the wrong kind is a TypeError, a missing tqdm an ImportError that says how to get it."""
    if progress is None or progress is False:
        return None
    if progress is True or isinstance(progress, Mapping):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError(
                "progress= needs tqdm, which is not installed: pip install 'robustpool[progress]' (or tqdm)"
            ) from None
        options: dict[str, Any] = {"total": total, "desc": desc, "unit": "item"}
        if isinstance(progress, Mapping):
            options.update(progress)
        return Bar(tqdm(**options), owned=True)
    if all(callable(getattr(progress, name, None)) for name in ("update", "set_postfix", "refresh", "close")):
        if getattr(progress, "total", None) is None and total is not None:
            progress.total = total
        return Bar(progress, owned=False)
    raise TypeError(f"progress must be True, a dict of tqdm options or a tqdm bar, not {type(progress).__name__}")
