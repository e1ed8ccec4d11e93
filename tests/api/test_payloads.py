"""What can be sent: lambdas, closures, partials, instances, and large payloads."""

from __future__ import annotations

import functools
import operator
import os

import pytest

from .cells import GET, Feature, PoolFactory
from .workers import Point, _add, _affine, _echo, _shift

pytestmark = pytest.mark.requires(Feature.POOL_API)


@pytest.mark.each_start_method
def test_lambdas_closures_partials_and_instances(pool_factory: PoolFactory) -> None:
    offset = 1000

    def add_offset(x: int) -> int:
        return x + offset

    with pool_factory(2) as pool:
        assert pool.map(lambda x: x * 2, range(10)) == [x * 2 for x in range(10)]
        assert pool.map(add_offset, range(5)) == [1000, 1001, 1002, 1003, 1004]
        assert list(pool.imap(add_offset, range(3))) == [1000, 1001, 1002]
        assert pool.apply(lambda a, b=0: a - b, (10,), {"b": 3}) == 7
        assert pool.map(functools.partial(_affine, scale=3, offset=1), range(4)) == [1, 4, 7, 10]
        assert pool.apply(functools.partial(_add, 40), (2,)) == 42
        assert pool.map(functools.partial(operator.mul, 5), [1, 2]) == [5, 10]
        points = [Point(1, -2), Point(-3, 4)]
        assert pool.map(Point.manhattan, points) == [3, 7]
        assert pool.map(_shift, points) == [Point(2, -3), Point(-2, 3)]
        assert pool.submit(lambda p: p.manhattan(), Point(5, 5)).result(timeout=GET) == 10


@pytest.mark.each_start_method
def test_large_payload_round_trip(pool_factory: PoolFactory) -> None:
    data = os.urandom(5 * 2**20)
    with pool_factory(1) as pool:
        assert pool.apply(_echo, (data,)) == data
        assert pool.submit(_echo, data).result(timeout=GET) == data
        back = pool.map(_echo, [data, data[:1000]])
    assert back[0] == data
    assert back[1] == data[:1000]
