"""Early-stopping rules for answer voting (adaptive self-consistency)."""

from __future__ import annotations

import math


def leader_margin(votes: dict[int, float]) -> tuple[float, float]:
    """Votes of the leader and of the runner-up (0 if there is none)."""
    ranked = sorted(votes.values(), reverse=True)
    return (ranked[0] if ranked else 0.0), (ranked[1] if len(ranked) > 1 else 0.0)


def cannot_be_overtaken(votes: dict[int, float], remaining: int) -> bool:
    """True when the leader stays strictly ahead even if every remaining sample votes
    for the runner-up."""
    leader, runner_up = leader_margin(votes)
    return leader > 0 and leader - runner_up > remaining


def beta_leader_probability(leader_votes: int, runner_up_votes: int) -> float:
    """P(p_leader > p_runner_up) under a uniform prior on their two-way split.

    The leader's share p of the two top classes has posterior Beta(a, b) with
    a = leader + 1, b = runner_up + 1; the answer is P(p > 1/2) = 1 - I_{1/2}(a, b),
    which for integer a, b is a binomial tail: P(Binomial(a + b - 1, 1/2) < a).
    """
    a, b = leader_votes + 1, runner_up_votes + 1
    trials = a + b - 1
    below = sum(math.comb(trials, j) for j in range(a))
    return below / 2**trials
