"""Run every sigkill_<peer>.py script, one at a time, and print their RESULT lines as a Markdown table.

    python docs/peers/run_all.py

A peer whose library is not importable is skipped (and said so). Each script runs in a
session of its own, 90 s at most; whatever it leaves running in that session is killed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 90.0

# (script, the module it needs, the distribution whose version is reported)
PEERS = [
    ("sigkill_robustpool.py", "robustpool", "robustpool"),
    ("sigkill_multiprocessing_pool.py", "multiprocessing", None),
    ("sigkill_process_pool_executor.py", "concurrent.futures", None),
    ("sigkill_loky.py", "loky", "loky"),
    ("sigkill_pebble.py", "pebble", "pebble"),
    ("sigkill_billiard.py", "billiard", "billiard"),
    ("sigkill_mpire.py", "mpire", "mpire"),
    ("sigkill_aiomultiprocess.py", "aiomultiprocess", "aiomultiprocess"),
    ("sigkill_dask.py", "distributed", "distributed"),
]
COLUMNS = [
    ("peer", "peer"),
    ("delivered", "delivered"),
    ("failed", "failed"),
    ("error", "error of the killed task"),
    ("blamed", "tasks blamed"),
    ("hung", "hung"),
    ("usable_after", "usable after"),
]
_FIELD = re.compile(r"(\w+)=(\S+)")


def parse(line: str) -> dict[str, str]:
    """The fields of 'RESULT key=value ... note=free text'."""
    head, _, note = line.partition(" note=")
    fields = dict(_FIELD.findall(head))
    fields["note"] = note
    return fields


def run_in_session(path: Path, timeout: float) -> tuple[str, str, int | None, bool]:
    """Run a script in a session of its own: (stdout, stderr, exit code, timed out). At the
    deadline its whole session is killed, and so is whatever it leaves in it."""
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the script left in its session
    return out, err, proc.returncode, timed_out


def run(script: str) -> dict[str, str] | str:
    """The script's RESULT fields, or why there are none."""
    out, err, code, timed_out = run_in_session(HERE / script, TIMEOUT)
    if timed_out:
        return f"no RESULT line: still running after {TIMEOUT:.0f} s (killed)"
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return f"no RESULT line (exit code {code}): {tail}"
    return parse(lines[-1])


def version(dist: str) -> str:
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} (version unknown)"


def main() -> int:
    rows: list[dict[str, str]] = []
    remarks: list[str] = []
    versions = [f"Python {platform.python_version()}"]
    for script, module, dist in PEERS:
        if importlib.util.find_spec(module) is None:
            remarks.append(f"{script}: skipped, `{module}` is not importable (pip install {dist})")
            continue
        if dist is not None:
            versions.append(version(dist))
        print(f"running {script} ...", file=sys.stderr, flush=True)
        outcome = run(script)
        if isinstance(outcome, str):
            remarks.append(f"{script}: {outcome}")
        else:
            rows.append(outcome)
    print(", ".join(versions))
    print()
    print("| " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(row.get(key, "?") for key, _ in COLUMNS) + " |")
    print()
    for row in rows:
        print(f"- {row.get('peer', '?')}: {row.get('note', '')}")
    for remark in remarks:
        print(f"- {remark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
