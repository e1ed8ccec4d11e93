"""Owner-side traceback handling, the same for every engine."""

from __future__ import annotations

import contextlib
import os
import traceback

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # robustpool/


def exception_chain(exc: BaseException) -> list[BaseException]:
    seen: dict[int, BaseException] = {}
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen[id(e)] = e
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
    return list(seen.values())


def detach_traceback(exc: BaseException, heading: str) -> None:
    """Keep the tracebacks of ``exc`` and its chain as text notes, and drop their frames.

    For errors raised in the owner and stored for later (an imap input's error, an item that
    cannot be pickled). A traceback holds its frames and each frame its caller (``f_back``)
    with the caller's locals, so a stored traceback keeps the whole calling stack alive: the
    user's frame holding an imap iterator, and so the iterator, which must be collectable
    once dropped. Leading frames of this package are left out of the text.
    """
    for e in exception_chain(exc):
        tb = e.__traceback__
        if tb is None:
            continue
        e.__traceback__ = None
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            tb = tb.tb_next
        if tb is None:
            continue
        text = "".join(traceback.format_tb(tb)).rstrip()
        traceback.clear_frames(tb)
        with contextlib.suppress(Exception):
            e.add_note(f"{heading}:\n{text}")
