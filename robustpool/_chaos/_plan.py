"""The seeded plan of a chaos run: which item gets which fault, decided in the owner.

An item's fault is a pure function of the seed and the item's serial number (the order in
which items reach the pools under this run), so the same seed over the same program gives
the same faults to the same items, whatever the timing.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

from ._faults import DELAY, DURING, EXIT, HANG, KILL, PHASES, SEGFAULT, Plan

_U64 = struct.Struct("<QQQQ")


@dataclass(frozen=True)
class Rates:
    """Per-item probabilities of each fault, and the knobs of the timed ones."""

    kill: float = 0.05
    segfault: float = 0.01
    exit: float = 0.01
    delay: float = 0.02
    hang: float = 0.0
    idle_kill: float = 0.0
    phases: tuple[str, ...] = PHASES
    max_delay: float = 0.05  # seconds: a delayed result comes up to this late
    during_within: float = 0.02  # seconds: a "during" death fires this soon after the call starts

    def __post_init__(self) -> None:
        for name in ("kill", "segfault", "exit", "delay", "hang", "idle_kill"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"chaos: {name} must be a probability between 0 and 1, got {value!r}")
        total = self.kill + self.segfault + self.exit + self.delay + self.hang
        if total > 1.0 + 1e-9:
            raise ValueError(f"chaos: the per-item rates add up to {total:g}, more than 1")
        if not self.phases or any(p not in PHASES for p in self.phases):
            raise ValueError(f"chaos: phases must be a non-empty subset of {PHASES}, got {self.phases!r}")
        for name in ("max_delay", "during_within"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < math.inf):
                raise ValueError(f"chaos: {name} must be a finite number of seconds >= 0, got {value!r}")


def _uniforms(seed: int, serial: int, salt: str) -> tuple[float, float, float, float]:
    digest = hashlib.blake2b(f"{seed}:{salt}:{serial}".encode(), digest_size=32).digest()
    a, b, c, d = _U64.unpack(digest)
    return a / 2.0**64, b / 2.0**64, c / 2.0**64, d / 2.0**64


def plan_item(seed: int, serial: int, rates: Rates, timeout: float) -> Plan | None:
    """The fault of item ``serial``, or None. A hang is planned only for a call with a
    time limit (``timeout`` > 0): anywhere else it would hang the user's run for ever."""
    u, v, w, _ = _uniforms(seed, serial, "item")
    edge = 0.0
    kind = ""
    kinds = ((KILL, rates.kill), (SEGFAULT, rates.segfault), (EXIT, rates.exit), (DELAY, rates.delay), (HANG, rates.hang))
    for name, rate in kinds:
        edge += rate
        if u < edge:
            kind = name
            break
    if not kind:
        return None
    if kind == HANG and timeout <= 0:
        return None
    if kind == DELAY:
        return Plan(serial, DELAY, DURING, v * rates.max_delay)
    if kind == HANG:
        return Plan(serial, HANG, DURING, 0.0)
    phase = rates.phases[min(int(v * len(rates.phases)), len(rates.phases) - 1)]
    return Plan(serial, kind, phase, w * rates.during_within)


def idle_kill_at(seed: int, serial: int, rates: Rates) -> bool:
    """Whether to kill an idle worker as chunk number ``serial`` is submitted."""
    return rates.idle_kill > 0 and _uniforms(seed, serial, "idle")[0] < rates.idle_kill
