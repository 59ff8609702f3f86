"""How a load-following request sizes its samples in flight."""

from __future__ import annotations

import pytest

from ttscale.strategies.in_flight import EngineLoad, FollowLoad

RULE = FollowLoad(floor=1, ceiling=4)


@pytest.mark.parametrize(
    ("running", "mine", "limit"),
    [
        (0, 0, 4),  # idle engine: the ceiling
        (3, 0, 4),  # 3 of 16 taken by others: still room for the ceiling
        (13, 0, 3),  # others leave 3 of the fill
        (14, 2, 4),  # 12 are others': 4 left, this request's 2 do not count against it
        (16, 0, 1),  # others fill the engine: the floor
        (40, 1, 1),  # overfull: the floor, never less
    ],
)
def test_limit_is_what_the_other_requests_leave_of_the_fill(running, mine, limit):
    assert RULE.limit(mine, EngineLoad(fill=16, running=running)) == limit
