"""All serialization of user data: functions, arguments, results and exceptions.

Plain data takes the standard C pickler (protocol 5), which is several times faster than
cloudpickle on small objects. Anything the standard pickler refuses (lambdas, closures,
dynamic classes), and anything it would pickle *by reference to* ``__main__`` (which may not
exist under that name in a supervisor started fresh), goes through cloudpickle, which
pickles it by value. Unpickling is always the standard ``pickle.loads``: cloudpickle's output
is ordinary pickle data.

Exceptions travel with their traceback (tblib), their ``__cause__``/``__context__`` chain
and notes, wrapped in an envelope of plain strings (qualified type name, message, formatted
traceback) that always unpickles, so the owner can fall back to a
:class:`~robustpool.RemoteTaskError` when the exception itself cannot be rebuilt.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import sys
import threading
import traceback
import types
from collections import ChainMap
from collections.abc import Callable, MutableMapping
from typing import Any, cast

import cloudpickle
from tblib import pickling_support

from .._errors import RemoteTaskError, safe_str
from .._tracebacks import exception_chain

PROTOCOL = pickle.HIGHEST_PROTOCOL
_MAIN_MARKER = b"__main__"

loads = pickle.loads


def pickled_by_name(fn: object) -> bool:
    """True for a plain function that pickles as a reference to its module and name (so
    its pickle is the same as long as that name still leads to it); False otherwise:
    lambdas, closures, ``__main__`` functions, methods, partials, builtins."""
    if type(fn) is not types.FunctionType:
        return False
    module = sys.modules.get(fn.__module__) if fn.__module__ != "__main__" else None
    obj: object = module
    for part in fn.__qualname__.split("."):
        obj = getattr(obj, part, None)  # '<locals>' is never an attribute: no closure passes
    return obj is fn


class _ByValue(Exception):
    """Raised inside the fast pickler: this object must go through cloudpickle."""


class _FastPickler(pickle.Pickler):
    """The C pickler, refusing anything that belongs to ``__main__``.

    By-reference pickles of ``__main__`` objects only resolve in a process that ran the
    same ``__main__``, and a fresh supervisor did not. ``reducer_override`` is called only
    for functions, classes and instances, never for builtin data, so plain data pays
    nothing for the check (no scan of the output either).
    """

    def reducer_override(self, obj: object) -> Any:
        named = isinstance(obj, (type, types.FunctionType))
        module = getattr(obj, "__module__", None) if named else type(obj).__module__
        if module == "__main__":
            raise _ByValue
        return NotImplemented


class _NotPlain(Exception):
    """Raised inside the plain pickler: the data holds an object pickled by a reducer."""


class _PlainPickler(pickle.Pickler):
    """The C pickler for builtin data only.

    ``reducer_override`` is called for every object that is not builtin data, and here it
    gives up at the first one. Builtin data always unpickles, so a result pickled by this
    pickler can travel as one pickle; anything else may fail to unpickle in the owner and
    is better pickled item by item (see ``_worker``).
    """

    def reducer_override(self, obj: object) -> Any:
        raise _NotPlain


def dumps_plain(obj: object) -> Payload | None:
    """Pickle ``obj`` if it is builtin data only (numbers, strings, bytes, containers of
    them), else return None. Costs nothing extra on builtin data."""
    sink = _Sink()
    try:
        _PlainPickler(sink, PROTOCOL).dump(obj)
    except _NotPlain:
        return None
    return sink.take()


# Values that pickle without running any user code, and always unpickle.
SCALARS = frozenset({int, float, str, bytes, bool, type(None)})


def dumps_entries(kinds: bytes, data: list[Any]) -> Payload:
    """Pickle an ITEMS result: each item's Entry kind, and its scalar or bytes."""
    sink = _Sink()
    pickle.Pickler(sink, PROTOCOL).dump((kinds, data))
    return sink.take()


class Scattered:
    """A pickle in pieces, in order, never joined: the runs the pickler wrote and the large
    ``bytes`` objects it handed over as they are.

    The C pickler writes a ``bytes`` of 64 KiB or more (and a large ``str``'s UTF-8) to its
    file directly, without copying it into its own buffer. ``_Sink`` keeps a reference
    instead of a copy, so a 1 MiB argument costs the owner no copy and no fresh megabyte
    (whose page faults cost as much as the copy) until it is written where it goes: into
    the worker's arena, or the socket, straight from the caller's object.
    """

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes], size: int) -> None:
        self.parts = parts
        self.size = size

    def __len__(self) -> int:
        return self.size

    def join(self) -> bytes:
        return b"".join(self.parts)


# A pickle as the serializer hands it over: one bytes object (small pickles, the common
# case) or its pieces.
Payload = bytes | Scattered


class _Sink:
    """The file the C pickler writes to (see ``Scattered``).

    Only ``bytes`` are kept by reference: immutable, so the pickle cannot change after the
    call. Anything else a pickler hands over (a ``bytearray``, a ``PickleBuffer`` of a
    NumPy array) is copied now, as ``BytesIO`` would: the caller may mutate it before
    the task is sent, and a task's arguments are the values at the call.
    """

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: Any) -> int:
        if type(data) is not bytes:
            with memoryview(data) as view:
                data = view.tobytes()
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def take(self) -> Payload:
        """What was written (and forget it): one bytes object if it came in one."""
        parts, size = self.parts, self.size
        self.parts, self.size = [], 0
        if len(parts) == 1:
            return parts[0]
        return Scattered(parts, size) if parts else b""


def join(payload: Payload) -> bytes:
    return payload if type(payload) is bytes else cast(Scattered, payload).join()


def parts(payload: Payload) -> list[bytes]:
    """The buffers of ``payload``, in order (to gather them into one ``sendmsg``)."""
    return [payload] if type(payload) is bytes else cast(Scattered, payload).parts


class _Reused(threading.local):
    """One fast pickler per thread, kept between calls: building a Pickler subclass costs
    more than pickling a call's few arguments. ``busy`` guards reentrancy (a user's
    ``__reduce__`` that pickles through us gets a pickler of its own)."""

    def __init__(self) -> None:
        self.sink = _Sink()
        self.pickler = _FastPickler(self.sink, PROTOCOL)
        self.busy = False


_reused = _Reused()


def dump_payload(obj: object) -> Payload:
    """Pickle ``obj`` fast when plain pickle can do it faithfully, else with cloudpickle;
    large ``bytes`` inside are referenced, not copied (see ``Scattered``)."""
    mine = _reused
    reuse = not mine.busy
    if reuse:
        mine.busy = True
        sink, pickler = mine.sink, mine.pickler
    else:
        sink = _Sink()
        pickler = _FastPickler(sink, PROTOCOL)
    try:
        pickler.dump(obj)
    except Exception:
        sink.take()  # what a failed dump wrote is garbage
    else:
        return sink.take()
    finally:
        if reuse:
            pickler.clear_memo()  # the memo holds what was pickled: let it go now
            mine.busy = False
    # The standard pickler refuses lambdas, closures and classes it cannot import by name;
    # cloudpickle carries those by value (and raises if it cannot either).
    return _cloud_dumps(obj)


def dumps(obj: object) -> bytes:
    """``dump_payload`` in one bytes object (functions, initializers: small, kept long)."""
    return join(dump_payload(obj))


def _cloud_dumps(obj: object) -> Payload:
    sink = _Sink()
    _CloudPickler(sink, _CLOUD_TABLE).dump(obj)
    return sink.take()


_cloud_code_reduce = cloudpickle.Pickler.dispatch_table.get(types.CodeType)


def _code_reduce(code: types.CodeType) -> tuple[Any, ...]:
    """cloudpickle's reducer for code objects, keeping the real file name.

    cloudpickle names the code of functions it pickles by value ``<dynamic-code>`` (for
    payloads independent of where a function is defined). A ``__main__`` function's
    traceback then showed ``File "<dynamic-code>", line 6``; with its real file name the
    worker's frames point at the user's script and line, as ``multiprocessing`` shows them.
    """
    func, args = _cloud_code_reduce(code)
    return func, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


_CLOUD_TABLE: MutableMapping[Any, Callable[..., Any]] = (
    ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)
    if _cloud_code_reduce is not None
    else cloudpickle.Pickler.dispatch_table
)


def _reducers_for(exc: BaseException) -> dict[Any, Callable[..., Any]]:
    """A private dispatch table carrying tracebacks and chains, without touching copyreg."""
    table: dict[Any, Callable[..., Any]] = dict(copyreg.dispatch_table)
    table[types.TracebackType] = pickling_support.pickle_traceback
    for e in exception_chain(exc):
        table[type(e)] = _reduce_exception
    return table


def _reduce_exception(exc: BaseException) -> tuple[Any, ...]:
    """tblib's reducer, except for builtin types: those are rebuilt by calling the type
    with their args, so C-level fields set by their own ``__init__`` survive
    (``SystemExit.code``, ``OSError.errno``, ``StopIteration.value``)."""
    if type(exc).__module__ != "builtins":
        reduced: tuple[Any, ...] = pickling_support.pickle_exception(exc)
        return reduced
    func, args, *rest = cast(tuple[Any, ...], exc.__reduce__())
    chain = (exc.__cause__, exc.__traceback__, exc.__context__, exc.__suppress_context__, getattr(exc, "__notes__", None))
    return (pickling_support.unpickle_exception, (func, args, *chain), *rest)


def _dumps_exception(exc: BaseException) -> bytes:
    table = _reducers_for(exc)
    buf = io.BytesIO()
    try:
        pickler = pickle.Pickler(buf, PROTOCOL)
        pickler.dispatch_table = table
        pickler.dump(exc)
        data = buf.getvalue()
        if _MAIN_MARKER not in data:
            return data
    except Exception:
        pass
    buf = io.BytesIO()
    _CloudPickler(buf, ChainMap(table, _CLOUD_TABLE)).dump(exc)
    return buf.getvalue()


class _CloudPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle with a dispatch table of ours. The C pickler reads ``dispatch_table``
    only while initialising, and cloudpickle's class attribute would shadow a later
    assignment, so it is set first."""

    def __init__(self, file: _Sink | io.BytesIO, table: MutableMapping[Any, Callable[..., Any]]) -> None:
        self.dispatch_table = table
        super().__init__(file, PROTOCOL)


def _qualified_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in (None, "builtins") else f"{module}.{name}"


def format_exception(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:
        return f"{_qualified_name(type(exc))}: {safe_str(exc)}\n"


# A traceback longer than this keeps its first and last _KEEP_FRAMES // 2 frames. Pickling
# a traceback recurses once per frame (tblib nests them), so a RecursionError's thousand
# frames hit the recursion limit -- or, with a raised limit, overflow the C stack.
_KEEP_FRAMES = 100
_KEEP_CHAIN = 32  # causes and contexts kept, for the same reason


def _truncate(exc: BaseException) -> None:
    """Shorten deep tracebacks and long exception chains in place, saying so in a note."""
    for depth, e in enumerate(exception_chain(exc)):
        if depth >= _KEEP_CHAIN:
            e.__cause__ = e.__context__ = None
        frames: list[types.TracebackType] = []
        tb = e.__traceback__
        while tb is not None:
            frames.append(tb)
            tb = tb.tb_next
        if len(frames) <= _KEEP_FRAMES:
            continue
        half = _KEEP_FRAMES // 2
        frames[half - 1].tb_next = frames[-half]
        with contextlib.suppress(Exception):
            e.add_note(f"robustpool: {len(frames) - 2 * half} frames of this traceback were left out (after frame {half})")


def encode_exception(exc: BaseException) -> bytes:
    """Serialize an exception raised in a worker; never raises.

    The envelope is a tuple of plain strings plus the pickled exception (or None when it
    could not be pickled), so the owner always learns at least what happened. Deep
    tracebacks are shortened first, so a RecursionError comes back as itself.
    """
    with contextlib.suppress(Exception):
        _truncate(exc)
    text = format_exception(exc)
    try:
        inner: bytes | None = _dumps_exception(exc)
    except BaseException:
        inner = None
    return pickle.dumps((_qualified_name(type(exc)), safe_str(exc), text, inner), PROTOCOL)


def decode_exception(data: bytes | bytearray) -> BaseException:
    """Rebuild a worker's exception with its frames, or a RemoteTaskError describing it."""
    type_name, message, text, inner = pickle.loads(data)
    if inner is not None:
        try:
            exc = pickle.loads(inner)
        except BaseException as err:
            fallback = RemoteTaskError(type_name, message, text)
            fallback.__cause__ = err
            return fallback
        if isinstance(exc, BaseException):
            return exc
    return RemoteTaskError(type_name, message, text)


def strip_first_frame(exc: BaseException) -> None:
    """Drop the worker loop's own frame so tracebacks start in the user's function."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        exc.__traceback__ = tb.tb_next
