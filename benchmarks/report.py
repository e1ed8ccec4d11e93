"""Rendering a Report: a plain-text table for the terminal and a Markdown document."""

from __future__ import annotations

from .results import OK, Report, Row

HEADERS = ("case", "peer", "median", "unit", "x best", "x stdlib", "repeats", "detail")


def format_value(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cells(row: Row) -> tuple[str, ...]:
    """The table cells of one row; a failed row shows its status where the median would be."""
    median = row.median
    status = row.status
    shown = format_value(median) if median is not None else status
    detail = row.detail
    if median is not None and status != OK:
        detail = f"{status}; {detail}" if detail else status
    repeats = f"{len(row.values)}/{len(row.outcomes)}" if status != OK else str(len(row.outcomes))
    return (row.case, row.peer, shown, row.unit, _ratio(row.ratio_best), _ratio(row.ratio_stdlib), repeats, detail)


def text(report: Report) -> str:
    """A plain-text table with the machine and the notes under it."""
    table = [HEADERS, *(cells(row) for row in report.rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS) - 1)]
    right = {2, 4, 5, 6}
    lines = []
    for k, r in enumerate(table):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))]
        lines.append("  ".join([*parts, r[-1]]).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    lines.append("")
    lines += [f"{name}: {about}" for name, about in report.cases.items()]
    lines.append("")
    lines += [f"{key}: {value}" for key, value in report.machine.items()]
    lines += ["", *(f"* {note}" for note in report.notes), f"(run took {report.seconds:.0f} s)"]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: Report) -> str:
    """The table, the machine description and the notes as Markdown."""
    lines = ["# robustpool benchmarks", ""]
    lines.append("| case | peer | median | unit | ratio to best peer | ratio to stdlib | repeats | detail |")
    lines.append("|---|---|---:|---|---:|---:|---:|---|")
    for row in report.rows:
        lines.append("| " + " | ".join(_md(c) for c in cells(row)) + " |")
    lines += ["", "## Cases", ""]
    lines += [f"- **{name}**: {_md(about)}" for name, about in report.cases.items()]
    lines += ["", "## Machine", ""]
    lines += [f"- **{_md(key)}**: {_md(value)}" for key, value in report.machine.items()]
    lines += ["", "## Notes", ""]
    lines += [f"- {_md(note)}" for note in report.notes]
    lines += ["", f"The run took {report.seconds:.0f} s.", ""]
    return "\n".join(lines)
