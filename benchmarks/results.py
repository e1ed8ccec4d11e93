"""The data the harness produces: one Outcome per (case, peer, repeat), one Row per (case, peer).

Ratios are slowdown factors, whatever the unit: 1.00 is the reference, 2.00 means twice as
slow (half the throughput, or twice the time or memory), 0.50 twice as good.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

OK = "ok"


@dataclass
class Outcome:
    """One repeat of one case for one peer."""

    value: float | None = None
    status: str = OK  # "ok", "hang", "broken (Name)", "error (Name: message)"
    detail: dict[str, float | str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK and self.value is not None

    @classmethod
    def failed(cls, status: str, **detail: float | str) -> Outcome:
        return cls(None, status, dict(detail))


@dataclass
class Row:
    """The summary of one case for one peer."""

    case: str
    peer: str  # the peer's table label
    unit: str
    higher_is_better: bool
    outcomes: list[Outcome] = field(default_factory=list)
    detail: str = ""  # case-specific text, filled in by the case's summarize()
    ratio_best: float | None = None
    ratio_stdlib: float | None = None
    reference: str | None = None  # the label of the stdlib row ratio_stdlib compares with
    # The faster of the peer's rivals (for robustpool's thread pools: ThreadPool and TPE),
    # when every rival ran in the case, and the slowdown factor against it.
    rival: str | None = None
    ratio_rival: float | None = None

    @property
    def values(self) -> list[float]:
        return [o.value for o in self.outcomes if o.ok and o.value is not None]

    @property
    def median(self) -> float | None:
        values = self.values
        return statistics.median(values) if values else None

    @property
    def status(self) -> str:
        """``ok`` if every repeat succeeded, else the first failure (with how many repeats failed)."""
        failures = [o.status for o in self.outcomes if not o.ok]
        if not self.outcomes:
            return "not run"
        if not failures:
            return OK
        if len(failures) == len(self.outcomes):
            return failures[0]
        return f"{failures[0]} in {len(failures)}/{len(self.outcomes)} repeats"

    def slowdown(self, reference: float | None) -> float | None:
        """How many times worse than ``reference`` this row's median is (1.0 = as good)."""
        median = self.median
        if median is None or reference is None or median <= 0 or reference <= 0:
            return None
        return reference / median if self.higher_is_better else median / reference


@dataclass
class Report:
    """Everything one run produced."""

    rows: list[Row]
    machine: dict[str, str]
    notes: list[str]
    seconds: float
    cases: dict[str, str] = field(default_factory=dict)  # name -> what it measures

    def row(self, case: str, peer: str) -> Row | None:
        for row in self.rows:
            if row.case == case and row.peer == peer:
                return row
        return None
