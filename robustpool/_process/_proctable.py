"""One pass over the process table: each process's parent, group and resident memory.

The supervisor needs two facts about the processes under it, several times a second: the
RSS of each worker's whole tree (for memory limits and the OOM diagnosis) and which
processes were orphaned to it (to kill what tasks left behind). Asking per worker (psutil's
``children(recursive=True)`` scans all of ``/proc`` each time) costs O(workers x processes)
per sample: a whole core at 128 workers. Here one scan serves every question of a sample.

On Linux the scan reads ``/proc/<pid>/stat`` directly (about 17 us a process); elsewhere it
asks psutil for the same fields.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    rss: int  # bytes
    zombie: bool


class Table:
    """A snapshot of every process visible to us, with a parent -> children index."""

    def __init__(self, procs: Iterable[Proc]) -> None:
        self.procs = {p.pid: p for p in procs}
        self.children: dict[int, list[int]] = {}
        for p in self.procs.values():
            self.children.setdefault(p.ppid, []).append(p.pid)

    def descendants(self, root: int) -> list[int]:
        """Every live process under ``root`` (not ``root`` itself), parents first."""
        out: list[int] = []
        seen = {root}
        todo = list(self.children.get(root, ()))
        while todo:
            pid = todo.pop(0)
            if pid in seen:
                continue
            seen.add(pid)
            if not self.procs[pid].zombie:
                out.append(pid)
            todo.extend(self.children.get(pid, ()))  # a zombie's children are still ours to find
        return out

    def tree_rss(self, root: int) -> int | None:
        """RSS of ``root`` and all its descendants, bytes; None if ``root`` is gone."""
        if root not in self.procs:
            return None
        return self.procs[root].rss + sum(self.procs[pid].rss for pid in self.descendants(root))


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def scan() -> Table:
    if sys.platform.startswith("linux"):
        return Table(_scan_proc())
    return Table(_scan_psutil())


def _scan_proc() -> list[Proc]:
    out: list[Proc] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
            # The command name is in parentheses and may hold spaces or ')': split after
            # the last ')'. Then: state ppid pgrp ... rss (the 24th field, in pages).
            fields = data[data.rindex(b")") + 2 :].split()
            out.append(Proc(int(name), int(fields[1]), int(fields[21]) * _PAGE, fields[0] == b"Z"))
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
    return out


def _scan_psutil() -> list[Proc]:
    import psutil

    out: list[Proc] = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error), p.oneshot():
            out.append(Proc(p.pid, p.ppid(), p.memory_info().rss, p.status() == psutil.STATUS_ZOMBIE))
    return out
