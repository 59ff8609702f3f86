"""Verifier calls made by strategies, billed to the request's budget.

Each call is checked against the verifier-token cap *before* it starts, with the
verifier's own upper estimate, so the cap is never exceeded.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import StrategyContext


async def score_outcomes(
    ctx: StrategyContext, verifier_name: str, texts: Sequence[str]
) -> list[float] | None:
    """Outcome scores in [0, 1] for `texts`; None when the verifier budget cannot pay."""
    verifier = ctx.verifiers.outcome[verifier_name]
    if not texts:
        return []
    if not ctx.budget.can_verify(await verifier.estimate_outcome_tokens(ctx.question, texts)):
        return None
    result = await verifier.score_outcomes(ctx.question, list(texts), request_id=ctx.request_id)
    ctx.budget.charge_verifier(result.usage, verifier.shape)
    return result.scores


async def score_steps(
    ctx: StrategyContext,
    verifier_name: str,
    solutions: Sequence[Sequence[str]],
    *,
    last_only: bool = False,
) -> list[list[float]] | None:
    """Per-step scores for each solution; None when the verifier budget cannot pay.

    With `last_only` the last score of each list is the final step's; earlier ones may
    be missing.
    """
    verifier = ctx.verifiers.process[verifier_name]
    solutions = [list(steps) for steps in solutions]
    estimate = await verifier.estimate_step_tokens(ctx.question, solutions, last_only=last_only)
    if not ctx.budget.can_verify(estimate):
        return None
    result = await verifier.score_steps(
        ctx.question, solutions, last_only=last_only, request_id=ctx.request_id
    )
    ctx.budget.charge_verifier(result.usage, verifier.shape)
    return result.scores
