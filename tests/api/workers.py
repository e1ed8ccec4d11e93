"""What the API tests hand to workers: functions, classes and exceptions, at module level.

Workers receive these by reference (``api.workers._square``), so this module must stay
importable by that name in a fresh interpreter: a spawned supervisor gets the owner's
``sys.path`` (pytest puts ``tests/`` on it for the ``api`` package) and imports it from
there. Keep it free of test machinery (no pytest, no fixtures) and define nothing in a test
module that a worker has to import. The input generator and its exception run in the owner
but are shared by several modules, so they live here too.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn


def _square(x: int) -> int:
    return x * x


def _add(a: int, b: int) -> int:
    return a + b


def _affine(x: int, scale: int = 1, offset: int = 0) -> int:
    return x * scale + offset


def _sleep_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def _slow_identity(x: float) -> float:
    time.sleep(x)
    return x


def _echo(data: bytes) -> bytes:
    return data


def _pid_of(x: int) -> tuple[int, int]:
    return x * 3, os.getpid()


def _sigkill_at(x: int, at: int) -> int:
    if x == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _fail_on_5(x: int) -> int:
    if x == 5:
        raise ValueError(f"item {x} is bad")
    return x * x


def _fail_on_odd_after_2(x: int) -> int:
    if x > 2 and x % 2:
        raise KeyError(f"odd item {x}")
    return x


def _raise_key_error(x: int) -> int:
    raise KeyError(f"missing {x}")


def _helper_that_raises(x: int) -> int:
    raise ValueError(f"helper refused {x}")


def _task_calling_helper(x: int) -> int:
    return _helper_that_raises(x) + 1


def _raise_system_exit(code: int) -> NoReturn:
    raise SystemExit(code)


def _raise_keyboard_interrupt() -> NoReturn:
    raise KeyboardInterrupt("stop right there")


class CustomTaskError(Exception):
    """A user exception type that must come back as itself."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


def _raise_custom(code: int) -> NoReturn:
    raise CustomTaskError(code, f"custom failure {code}")


def _refuse_to_rebuild(*args: Any) -> NoReturn:
    raise RuntimeError("this exception cannot be rebuilt")


class UnrebuildableError(Exception):
    """Pickles fine in the worker, but unpickling it in the owner raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_to_rebuild, self.args)


def _raise_unrebuildable(x: int) -> NoReturn:
    raise UnrebuildableError(f"unrebuildable {x}")


class InputBrokeError(Exception):
    """Raised by an input generator, in the owner."""


def _numbers_then_error(n: int) -> Iterator[int]:
    yield from range(n)
    raise InputBrokeError(f"input broke after {n} items")


@dataclass(frozen=True)
class Point:
    x: int
    y: int

    def manhattan(self) -> int:
        return abs(self.x) + abs(self.y)


def _shift(p: Point) -> Point:
    return Point(p.x + 1, p.y - 1)


_INIT_VALUE: str | None = None


def _set_init_value(value: str) -> None:
    global _INIT_VALUE
    _INIT_VALUE = f"{value}:{os.getpid()}"


def _read_init_value(_: int) -> tuple[str | None, int]:
    return _INIT_VALUE, os.getpid()


def _failing_initializer(marker: str) -> None:
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    raise RuntimeError("initializer exploded: database unreachable")


def _touch(path: str) -> str:
    Path(path).write_text("ran")
    return path
