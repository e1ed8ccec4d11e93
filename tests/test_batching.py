"""Batching is invisible: tiny chunksize-1 items travel together, yet fail one by one."""

from __future__ import annotations

import os

import pytest

from robustpool import RobustPool, TaskSerializationError


class Refuses:
    """A result that cannot be rebuilt in the owner (whose pid it is given)."""

    def __init__(self, owner: int) -> None:
        self.owner = owner

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.owner,))


def _rebuild(owner: int) -> Refuses:
    if os.getpid() == owner:
        raise ValueError("refusing to be rebuilt in the owner")
    return Refuses(owner)


def _item(arg: tuple[int, int, int]) -> object:
    x, bad, owner = arg
    return Refuses(owner) if x == bad else x


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_one_unloadable_result_fails_only_its_item(start_method: str) -> None:
    owner = os.getpid()
    with RobustPool(2, start_method=start_method) as pool:
        list(pool.imap(abs, range(2000)))  # warm up: tiny items get batched from here on
        got: list[object] = []
        it = pool.imap(_item, [(x, 404, owner) for x in range(1000)])
        for _ in range(1000):
            try:
                got.append(next(it))
            except TaskSerializationError as err:
                got.append(err)
    bad = [i for i, v in enumerate(got) if isinstance(v, TaskSerializationError)]
    assert bad == [404]
    assert "unpickling the result in the owner" in str(got[404])
    assert [v for i, v in enumerate(got) if i != 404] == [x for x in range(1000) if x != 404]
