"""The run's ledger of outcomes and the report printed at its end.

The runner feeds this module every event: each item submitted (with the outcomes its fault
allows), each value, error and cleanup call it observes, and each resource measurement.
:class:`Report` keeps the counters and the list of broken invariants, and renders the
report: one ``name value`` line per counter, so tools (and the smoke test) can grep for
lines such as ``lost 0``. A run is good only if every invariant line is zero (or equal, for
cleanups) and no violation was recorded; the exit code says which.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

#: How many violation details are printed (all are counted).
MAX_DETAILS = 40


@dataclass
class Report:
    """Counters of one run plus the violations found; thread-safe where robustpool calls in."""

    seed: int
    profile: str
    submitted: int = 0
    delivered: int = 0  # values handed to the consumer
    errors: Counter[str] = field(default_factory=Counter)  # errors handed, by type name
    faults: Counter[str] = field(default_factory=Counter)  # item faults planned, by kind
    events: Counter[str] = field(default_factory=Counter)  # chaos events fired, by kind
    apis: Counter[str] = field(default_factory=Counter)  # items submitted, by API
    cancelled: int = 0  # items of early-closed iterators that never ran
    orphans: int = 0  # result files of items whose worker was killed under them (allowed)
    lost: int = 0
    duplicates: int = 0
    wrong_values: int = 0
    wrong_errors: int = 0
    hangs: int = 0
    cleanups_run: int = 0
    cleanups_owed: int = 0
    leaked_processes: int = 0
    fd_before: int = 0
    fd_after: int = 0
    fd_allowance: int = 0
    temp_files_left: int = 0
    shm_left: int = 0
    ledger_items: int = 0  # items robustpool.testing kept books on (its checks, under this workload)
    ledger_broken: int = 0
    shm_ticks: int = 0  # looks at our process table (and /dev/shm)
    shm_samples: int = 0  # of which sampled what our processes hold in /dev/shm
    shm_triggered: int = 0  # ticks an inotify event (an entry created) asked for
    shm_cpu: float = 0.0  # CPU seconds the sampler spent
    shm_slowest: float = 0.0  # wall seconds of its slowest sample
    shm_inotify: bool = False
    pools: int = 0
    phases: int = 0
    log_records: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    interrupted: str = ""  # why the run stopped early, if it did
    violations: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def violation(self, kind: str, detail: str) -> None:
        """Record a broken invariant (``kind`` is the counter it also bumps)."""
        with self._lock:
            self.violations.append(f"{kind}: {detail}")

    @property
    def fd_growth(self) -> int:
        return self.fd_after - self.fd_before

    @property
    def faulted_items(self) -> int:
        return sum(n for kind, n in self.faults.items() if kind != "none")

    @property
    def ok(self) -> bool:
        return (
            not self.violations
            and not self.interrupted
            and self.lost == 0
            and self.duplicates == 0
            and self.wrong_values == 0
            and self.wrong_errors == 0
            and self.hangs == 0
            and self.cleanups_run == self.cleanups_owed
            and self.leaked_processes == 0
            and self.fd_growth <= self.fd_allowance
            and self.temp_files_left == 0
            and self.shm_left == 0
        )

    def render(self) -> str:
        def kinds(c: Counter[str]) -> str:
            return " ".join(f"{k}={v}" for k, v in sorted(c.items())) or "-"

        pct = 100.0 * self.faulted_items / self.submitted if self.submitted else 0.0
        lines = [
            "=== robustpool stress report ===",
            f"seed {self.seed}",
            f"profile {self.profile}",
            f"elapsed {self.elapsed:.1f}s",
            f"pools {self.pools}",
            f"tasks submitted {self.submitted}",
            f"  by api {kinds(self.apis)}",
            f"faults injected {self.faulted_items} ({pct:.1f}% of tasks)",
            f"  by kind {kinds(Counter({k: v for k, v in self.faults.items() if k != 'none'}))}",
            f"chaos events {kinds(self.events)}",
            f"results delivered {self.delivered}",
            f"errors delivered {sum(self.errors.values())}",
            f"  by kind {kinds(self.errors)}",
            f"cancelled unstarted {self.cancelled}",
            f"orphaned by kills {self.orphans}",
            f"robustpool log records {kinds(self.log_records)}",
            f"shm sampler {self.shm_ticks} ticks ({self.shm_triggered} on create"
            f"{'' if self.shm_inotify else ', no inotify'}), {self.shm_samples} samples, "
            f"{1000 * self.shm_cpu:.0f} ms CPU, slowest sample {1000 * self.shm_slowest:.1f} ms",
            "--- invariants ---",
            f"lost {self.lost}",
            f"duplicates {self.duplicates}",
            f"wrong values {self.wrong_values}",
            f"wrong errors {self.wrong_errors}",
            f"hangs {self.hangs}",
            f"cleanups run {self.cleanups_run} owed {self.cleanups_owed}",
            f"leaked processes {self.leaked_processes}",
            f"fd growth {self.fd_growth} (before {self.fd_before}, after {self.fd_after}, allowance {self.fd_allowance})",
            f"temp files left {self.temp_files_left}",
            f"shm entries left {self.shm_left}",
            f"robustpool.testing ledger {self.ledger_items} items, {self.ledger_broken} broken",
        ]
        if self.interrupted:
            lines.append(f"interrupted {self.interrupted}")
        if self.violations:
            lines.append(f"--- {len(self.violations)} violation(s) ---")
            lines += [f"  {v}" for v in self.violations[:MAX_DETAILS]]
            if len(self.violations) > MAX_DETAILS:
                lines.append(f"  ... and {len(self.violations) - MAX_DETAILS} more")
        verdict = "OK" if self.ok else "FAILED"
        lines.append(f"RESULT {verdict}")
        return "\n".join(lines)
