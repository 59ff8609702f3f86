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


def predictive_leader_probability(leader_votes: int, runner_up_votes: int, remaining: int) -> float:
    """P(the leader is still strictly ahead of the runner-up once `remaining` more samples
    have voted), under the same uniform prior on their two-way split.

    The Beta rule asks whether the leader would win with unlimited samples; a run of n
    samples only needs the leader of all n, and the posterior predictive counts the
    samples still to come (in flight or not started): with few left, a lead they cannot
    undo is enough, and early on a unanimous start is judged by what n samples could
    do to it. Each remaining vote is taken as going to one of the two: X ~
    BetaBinomial(remaining, leader + 1, runner_up + 1) votes for the leader, who stays
    ahead iff leader + X > runner_up + remaining - X. What this leaves out: a third
    answer overtaking the leader (the Beta rule leaves it out too), and votes that go to
    neither, which can move P either way, since a final tie counts as a loss and P rises
    and falls with the parity of `remaining` (P(1, 0, r) for r = 0..4: 1, 0.667, 0.833,
    0.700, 0.800).
    """
    a, b = leader_votes + 1, runner_up_votes + 1
    ahead = sum(
        _beta_binomial(k, remaining, a, b)
        for k in range(remaining + 1)
        if leader_votes + k > runner_up_votes + remaining - k
    )
    return min(float(ahead), 1.0)


def _beta_binomial(k: int, trials: int, a: int, b: int) -> float:
    """P(X = k) for X ~ BetaBinomial(trials, a, b)."""
    log_p = (
        math.lgamma(trials + 1)
        - math.lgamma(k + 1)
        - math.lgamma(trials - k + 1)
        + _log_beta(k + a, trials - k + b)
        - _log_beta(a, b)
    )
    return math.exp(log_p)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
