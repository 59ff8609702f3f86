"""The adaptive stop rules' probabilities, checked against values worked by hand and
against a direct numerical integration of the posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttscale.strategies.stopping import beta_leader_probability, predictive_leader_probability


def integrated_predictive(leader: int, runner_up: int, remaining: int) -> float:
    """The same probability the long way: the leader's two-way share p has posterior
    Beta(leader + 1, runner_up + 1); given p, the remaining votes for the leader are
    Binomial(remaining, p); integrate the leader-stays-ahead tail over p."""
    p = np.linspace(0.0, 1.0, 200_001)
    density = p**leader * (1 - p) ** runner_up
    density /= np.trapezoid(density, p)
    tail = sum(
        math.comb(remaining, k) * p**k * (1 - p) ** (remaining - k)
        for k in range(remaining + 1)
        if leader + k > runner_up + remaining - k
    )
    return float(np.trapezoid(density * tail, p))


@pytest.mark.parametrize(
    ("leader", "runner_up", "remaining"),
    [(3, 0, 13), (4, 0, 12), (5, 3, 8), (7, 2, 7), (2, 2, 5), (1, 0, 15)],
)
def test_predictive_probability_matches_the_integral(leader, runner_up, remaining):
    exact = predictive_leader_probability(leader, runner_up, remaining)
    assert exact == pytest.approx(integrated_predictive(leader, runner_up, remaining), abs=1e-6)


def test_predictive_probability_by_hand():
    # one vote to come after 1 to 0: a tie is no lead, so the leader needs it: E[p] = 2/3
    assert predictive_leader_probability(1, 0, 1) == pytest.approx(2 / 3)
    # nothing to come: the lead is what it is
    assert predictive_leader_probability(2, 1, 0) == 1.0
    assert predictive_leader_probability(2, 2, 0) == 0.0
    # a lead the remaining votes cannot undo
    assert predictive_leader_probability(6, 1, 4) == pytest.approx(1.0)


def test_predictive_and_beta_rules_differ_by_the_horizon():
    """Early on both judge a unanimous start alike; late, the predictive rule knows how
    few votes are left and the Beta rule does not."""
    assert predictive_leader_probability(3, 0, 13) < 0.95 < predictive_leader_probability(4, 0, 12)
    assert beta_leader_probability(3, 0) < 0.95 < beta_leader_probability(4, 0)
    assert beta_leader_probability(8, 4) < 0.9 < predictive_leader_probability(8, 4, 4)
