"""Serialization of user data: the fast path, the cloudpickle path, exceptions with frames."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback
from typing import Any

from robustpool import RemoteTaskError
from robustpool._process import _serialize as ser


def _raiser(n: int) -> None:
    if n:
        _raiser(n - 1)
    raise ValueError(f"bottom of {n}")


class Unrebuildable(Exception):
    """Pickles, but rebuilding it raises."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("cannot rebuild")


def _round_trip(exc: BaseException) -> BaseException:
    return ser.decode_exception(ser.encode_exception(exc))


def _caught(fn: object, *args: object) -> BaseException:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_plain_data_takes_the_standard_pickler_and_lambdas_cloudpickle() -> None:
    assert ser.dumps([1, "a", None]) == __import__("pickle").dumps([1, "a", None], ser.PROTOCOL)
    square = ser.loads(ser.dumps(lambda x: x * x))
    assert square(7) == 49


def test_exception_keeps_type_frames_and_chain() -> None:
    exc = _caught(_raiser, 2)
    back = _round_trip(exc)
    assert type(back) is ValueError and str(back) == "bottom of 0"
    text = "".join(traceback.format_exception(back))
    assert "_raiser" in text and __file__ in text


def test_builtin_fields_survive() -> None:
    back = _round_trip(_caught(sys.exit, 3))
    assert isinstance(back, SystemExit) and back.code == 3
    back = _round_trip(_caught(open, "/nonexistent/robustpool"))
    assert isinstance(back, FileNotFoundError) and back.errno == 2 and back.__traceback__ is not None


def test_unrebuildable_exception_becomes_remote_task_error() -> None:
    back = _round_trip(_caught(_raise_unrebuildable))
    assert isinstance(back, RemoteTaskError)
    assert back.type_name.endswith("Unrebuildable") and "_raise_unrebuildable" in back.remote_traceback


def _raise_unrebuildable() -> None:
    raise Unrebuildable("x")


def test_exceptions_raised_in_main_keep_their_frames() -> None:
    # Frames of __main__ code push the pickle through cloudpickle; tracebacks and causes
    # must survive that path too.
    script = textwrap.dedent(
        """
        import traceback
        from robustpool._process import _serialize as ser
        def inner():
            raise ValueError("deep")
        try:
            try:
                inner()
            except ValueError as v:
                raise KeyError("outer") from v
        except BaseException as exc:
            back = ser.decode_exception(ser.encode_exception(exc))
        print("".join(traceback.format_exception(back)))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "in inner" in out and "ValueError: deep" in out and "direct cause" in out and "KeyError: 'outer'" in out


class _PicklesThroughUs:
    """A user object whose ``__reduce__`` pickles something through robustpool itself."""

    def __reduce__(self) -> tuple[object, ...]:
        return (bytes, (ser.dumps([1, 2, 3]),))


def test_the_reused_pickler_survives_reentrancy_failures_and_big_outputs() -> None:
    pickle = __import__("pickle")
    nested = pickle.loads(ser.dumps([_PicklesThroughUs(), "after"]))
    assert pickle.loads(nested[0]) == [1, 2, 3] and nested[1] == "after"
    # A dump the fast pickler gave up on half-way leaves nothing behind for the next one.
    assert ser.loads(ser.dumps([1, 2, lambda: 3, 4]))[2]() == 3
    assert ser.dumps((5, "x")) == pickle.dumps((5, "x"), ser.PROTOCOL)
    big = b"b" * (1 << 20)
    assert ser.loads(ser.dumps(big)) == big
    assert ser.dumps((5, "x")) == pickle.dumps((5, "x"), ser.PROTOCOL)


def test_large_bytes_are_referenced_by_the_pickle_and_mutable_buffers_copied() -> None:
    """A task's pickle keeps the caller's big ``bytes`` objects, not copies (the copy
    happens once, into the socket or the worker's arena); a ``bytearray`` is copied at the
    call, so mutating it afterwards does not change what the worker gets."""
    pickle = __import__("pickle")
    big = bytes(range(256)) * 4096
    text = "é" * 100_000
    payload = ser.dump_payload([big, 1, text])
    assert isinstance(payload, ser.Scattered) and len(payload) == sum(map(len, ser.parts(payload)))
    assert any(part is big for part in ser.parts(payload))
    assert pickle.loads(payload.join()) == [big, 1, text]
    mutable = bytearray(big)
    payload = ser.dump_payload(mutable)
    mutable[:3] = b"xyz"
    assert pickle.loads(ser.join(payload)) == bytearray(big)
    assert type(ser.dump_payload((1, "small"))) is bytes  # small pickles stay one object
    plain = ser.dumps_plain([big, big + b"!"])
    assert plain is not None and pickle.loads(ser.join(plain)) == [big, big + b"!"]
    entries = ser.dumps_entries(b"\0", [big])
    assert any(part is big for part in ser.parts(entries))


def test_a_function_rebound_under_its_name_is_no_longer_taken_as_named() -> None:
    import types

    from robustpool._process._functions import _still_named

    module: Any = types.ModuleType("robustpool_test_rebound")
    exec("def f(x):\n    return x\n\nclass Box:\n    @staticmethod\n    def g(x):\n        return x\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        f, g = module.f, module.Box.g
        assert _still_named(f) and _still_named(g)  # a module attribute, and a dotted name
        module.f = lambda x: -x
        module.Box.g = staticmethod(lambda x: -x)
        assert not _still_named(f) and not _still_named(g)
    finally:
        del sys.modules[module.__name__]
    assert not _still_named(module.f)
