"""The engine-neutral vocabulary of a call: how items apply to a function, and how a task
is named in errors."""

from __future__ import annotations

import enum
import reprlib
from collections.abc import Callable
from typing import Any

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlevel = 2


class Mode(enum.IntEnum):
    """How a task's items are applied to its function."""

    APPLY = 0  # items are (args, kwds) pairs: f(*args, **kwds)
    MAP = 1  # items are single arguments: f(x)
    STAR = 2  # items are argument tuples: f(*x)


def function_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        inner = getattr(fn, "func", None)  # functools.partial
        return f"partial({function_name(inner)})" if callable(inner) else type(fn).__name__
    return str(name)


def describe(name: str, mode: Mode, item: Any) -> str:
    """A short human description of one item, e.g. ``kill_self(5)``."""
    try:
        if mode == Mode.MAP:
            inner = _repr.repr(item)
        elif mode == Mode.STAR:
            inner = ", ".join(_repr.repr(a) for a in item)
        else:
            args, kwds = item
            parts = [_repr.repr(a) for a in args]
            parts += [f"{k}={_repr.repr(v)}" for k, v in kwds.items()]
            inner = ", ".join(parts)
    except Exception:
        inner = "..."
    return f"{name}({inner})"
