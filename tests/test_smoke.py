"""The first promise, end to end: a killed worker costs one attributed error, not a hang."""

from __future__ import annotations

import os
import signal

import pytest

from robustpool import RobustPool, WorkerLostError


def _square_or_die(x: int) -> int:
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_sigkill_in_imap_fails_only_that_item(start_method: str) -> None:
    with RobustPool(2, start_method=start_method) as pool:
        it = pool.imap(_square_or_die, range(12))
        got: list[object] = []
        for _ in range(12):
            try:
                got.append(next(it))
            except WorkerLostError as exc:
                got.append(exc)
        with pytest.raises(StopIteration):
            next(it)
        assert pool.apply(_square_or_die, (3,)) == 9
    err = got[5]
    assert isinstance(err, WorkerLostError)
    assert err.signal is signal.SIGKILL and err.task_index == 5
    assert "SIGKILL (-9)" in str(err) and "_square_or_die(5)" in str(err)
    assert got[:5] + got[6:] == [x * x for x in range(12) if x != 5]
