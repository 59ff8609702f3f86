"""Vote and score combination rules shared by the strategies."""

from __future__ import annotations

import math

import pytest

from ttscale.verifiers.aggregate import (
    aggregate_steps,
    argmax_first,
    pessimistic_vote,
    plurality,
    weighted_vote,
)


@pytest.mark.parametrize(
    ("how", "expected"),
    [("min", 0.2), ("last", 0.9), ("prod", 0.5 * 0.2 * 0.9), ("mean", (0.5 + 0.2 + 0.9) / 3)],
)
def test_prm_aggregation(how, expected):
    assert math.isclose(aggregate_steps([0.5, 0.2, 0.9], how), expected)


def test_prm_aggregation_of_no_steps_and_unknown_rule():
    assert aggregate_steps([], "min") == 0.0
    with pytest.raises(ValueError):
        aggregate_steps([0.5], "median")


def test_plurality_counts_answered_samples_only():
    winner, votes = plurality([0, 1, 1, None, None, None])
    assert winner == 1 and votes == {0: 1.0, 1: 2.0}


def test_plurality_tie_goes_to_the_class_seen_first():
    assert plurality([2, 1, 1, 2])[0] == 2
    assert plurality([None, None])[0] is None


def test_weighted_vote_can_overturn_the_majority():
    winner, totals = weighted_vote([0, 0, 1], [0.1, 0.2, 0.9])
    assert winner == 1 and math.isclose(totals[0], 0.3)


def test_pessimistic_vote_penalises_thin_support():
    # class 1 has the higher mean score but one supporter; N=4, alpha=0.5
    winner, values = pessimistic_vote([0, 0, 0, 1], [0.7, 0.7, 0.7, 0.8], alpha=0.5)
    assert math.isclose(values[0], 0.7 - 0.5 * math.log(4) / 4)
    assert math.isclose(values[1], 0.8 - 0.5 * math.log(4) / 2)
    assert winner == 0
    assert pessimistic_vote([0, 0, 0, 1], [0.7, 0.7, 0.7, 0.8], alpha=0.0)[0] == 1


def test_argmax_first():
    assert argmax_first([0.1, 0.9, 0.9]) == 1
    assert argmax_first([]) is None
