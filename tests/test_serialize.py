"""Serialization of user data: the fast path, the cloudpickle path, exceptions with frames."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback

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
