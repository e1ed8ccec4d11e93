"""What a pool is worth in a process forked from its owner: nothing, and it says so.

A child forked from the owner (``os.fork``, a fork-context ``multiprocessing.Process``)
inherits copies of every pool's descriptors but none of its threads. Were it to keep the
copies, the control socket would stay open after the owner's death, and the supervisor and
its workers would live as long as the child: "no orphans" broken. So in the child, right
after the fork, each live engine closes its copies (without a word on them: they are shared
with the owner's), and every later use of a pool, a result or an iterator made before the
fork raises :class:`RuntimeError` at once instead of waiting forever for a dispatcher thread
that does not exist there.

Objects remember the fork *generation* they were made in; a fork bumps it in the child.
Comparing two ints costs nothing on the hot path (no ``getpid`` system call).
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

# Written only by the at-fork hook, which runs in the child before any other thread exists.
generation = 0
_owner_pids: dict[int, int] = {0: os.getpid()}  # generation -> the pid it started in


class Forkable(Protocol):
    def forget_after_fork(self) -> None:
        """Close this process's copies of the descriptors; touch nothing shared."""


_on_fork: weakref.WeakSet[Forkable] = weakref.WeakSet()


def register(obj: Forkable) -> None:
    _on_fork.add(obj)


def unregister(obj: Forkable) -> None:
    _on_fork.discard(obj)


def check(made_in: int, what: str) -> None:
    """Raise if an object made in generation ``made_in`` is used after a fork."""
    if made_in != generation:
        owner = _owner_pids.get(made_in, "another process")
        raise RuntimeError(
            f"this {what} belongs to process {owner}; it cannot be used in process {os.getpid()}, which was forked "
            f"from it (the pool's threads and workers stay with its owner): create a new pool in the child"
        )


def _after_fork_in_child() -> None:
    global generation
    generation += 1
    _owner_pids[generation] = os.getpid()
    engines = list(_on_fork)
    _on_fork.clear()
    for obj in engines:
        obj.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
