"""FunctionTable: the handles engines give a call's function, and the function's pickle.

An engine that pickles (the process engine, the Dask engine) pickles each call's function
on the caller's thread, so that a function that cannot be pickled is that call's error, and
gives equal functions one handle (``FuncRef.func_id``), so that a worker unpickles a
function once, not once per ``apply_async``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FunctionType
from typing import Any

from .._calls import function_name
from .._engine import FuncRef
from ._serialize import pickled_by_name
from ._tasks import pickle_function

_FUNC_MEMO = 256  # functions remembered by their pickle, so equal ones share a handle


def _still_named(fn: FunctionType) -> bool:
    """Whether a function once pickled by name still is (its name still leads to it): a
    module attribute looked up directly (most functions), the full walk otherwise."""
    module = sys.modules.get(fn.__module__)
    if module is not None and fn.__module__ != "__main__" and module.__dict__.get(fn.__qualname__) is fn:
        return True
    return pickled_by_name(fn)


class FunctionTable:
    """Function handles and pickles, thread-safe (facades call from any user thread)."""

    def __init__(self) -> None:
        # Guarded by _lock: the function memo (pickle -> handle id and name) and each
        # handle's pickle. No function is kept alive by them (a bound method's object, a
        # closure's data): each call's FuncRef holds its function for as long as it runs.
        self._lock = threading.Lock()
        self._by_blob: dict[bytes, tuple[int, str]] = {}
        self._blobs: dict[int, bytes] = {}
        # Functions pickled by name, by identity, with their handle: their pickle is known
        # without pickling them again (written under _lock; read without it, a dict
        # lookup). These are held strongly, but each is reachable from its module anyway
        # (that is what pickling by name means), and there are at most _FUNC_MEMO.
        self._by_fn: dict[Callable[..., Any], FuncRef] = {}

    def function(self, fn: Callable[..., Any]) -> FuncRef:
        """Pickle ``fn`` (raising TaskSerializationError if it cannot be), reusing the
        handle of an identical earlier pickle."""
        if type(fn) is FunctionType:
            ref = self._by_fn.get(fn)
            if ref is not None and _still_named(fn):
                return ref
        blob = pickle_function(fn)
        with self._lock:
            known = self._by_blob.get(blob)
            if known is None:
                if len(self._by_blob) >= _FUNC_MEMO:
                    old_id, _ = self._by_blob.pop(next(iter(self._by_blob)))
                    self._blobs.pop(old_id, None)
                known = (FuncRef.new_id(), function_name(fn))
                self._by_blob[blob] = known
                self._blobs[known[0]] = blob
            ref = FuncRef(known[0], known[1], fn)
            if pickled_by_name(fn):
                if len(self._by_fn) >= _FUNC_MEMO:
                    del self._by_fn[next(iter(self._by_fn))]
                self._by_fn[fn] = ref
        return ref

    def blob(self, func: FuncRef) -> bytes:
        """The pickle of a handle's function."""
        blob = self._blobs.get(func.func_id)  # one dict read, atomic: no lock needed to read
        return blob if blob is not None else pickle_function(func.fn)  # forgotten since: again
