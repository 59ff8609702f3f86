"""Inverse-entropy weighted voting ("The Sequential Edge", arXiv 2511.02309).

Chain entropy H_i is the mean, over the chain's generated tokens, of the Shannon entropy
of the top-k next-token distribution renormalised over those k [k=20]; each chain votes
for its answer with weight 1 / (H_i + 1e-6). Chains are drawn either in parallel or
*sequentially*, each attempt seeing the previous one and asked to check and refine it,
with the same per-chain token limit, so both modes spend matched total tokens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ttscale.engine.types import Sample, SamplingSpec
from ttscale.verifiers.aggregate import weighted_vote

from .base import StrategyContext, StrategyResult, finish_result, to_candidate
from .params import StrategyParams
from .registry import Strategy
from .sampling import SamplingOutcome
from .voting import candidate_votes, label_answers, pick_member

EPSILON = 1e-6
REFINE_PROMPT = (
    "Here is a previous attempt at this problem:\n\n{previous}\n\n"
    "Check the previous attempt step by step, fix any mistake, and give a refined "
    "solution with the final answer in \\boxed{{}}."
)


class InverseEntropyParams(StrategyParams):
    n: int = Field(8, ge=1, le=1024, description="chains")
    mode: Literal["parallel", "sequential"] = "parallel"
    top_k: int = Field(20, ge=2, le=20, description="k of the top-k entropy")
    refine_prompt: str = Field(
        REFINE_PROMPT, description="sequential mode; {previous} = last attempt"
    )
    parallel: int | None = Field(None, ge=1)

    @field_validator("refine_prompt")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        try:
            template.format(previous="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                "the only placeholder is {previous}; write other braces as {{ }}"
            ) from exc
        return template

    def samples_requested(self) -> int:
        return self.n

    def draws_independent_samples(self) -> bool:
        return self.mode == "parallel"


def chain_weight(sample: Sample) -> float:
    entropy = sample.mean_entropy
    return 1.0 / ((entropy if entropy is not None else 0.0) + EPSILON)


async def _sequential(ctx: StrategyContext, spec: SamplingSpec, params: InverseEntropyParams):
    outcome = SamplingOutcome()
    previous: Sample | None = None
    for index in range(params.n):
        messages = list(ctx.messages)
        if previous is not None:
            refine = params.refine_prompt.format(previous=previous.answer_text)
            messages += [
                {"role": "assistant", "content": previous.answer_text},
                {"role": "user", "content": refine},
            ]
        prompt = ctx.prompt_ids if previous is None else await ctx.engine.render_chat(messages)
        step = await ctx.sample(spec, 1, prompt_ids=prompt, first_index=index)
        outcome.finished += step.finished
        outcome.aborted += step.aborted
        if step.stop_reason != "completed" or not step.finished:
            outcome.stop_reason = step.stop_reason
            break
        previous = step.finished[0]
    return outcome


async def inverse_entropy(ctx: StrategyContext, params: InverseEntropyParams) -> StrategyResult:
    spec = params.sampling.replace(logprobs=params.top_k)
    if params.mode == "parallel":
        outcome = await ctx.sample(spec, params.n, parallel=params.parallel)
    else:
        outcome = await _sequential(ctx, spec, params)

    samples = outcome.finished
    candidates = [to_candidate(s, params) for s in samples]
    weights = [chain_weight(s) for s in samples]
    labels = await label_answers(ctx.verifiers.grader, candidates, params.answer)
    for candidate, weight in zip(candidates, weights, strict=True):
        candidate.scores["inverse_entropy_weight"] = weight
    winner, totals = weighted_vote(labels, weights)
    chosen = pick_member(candidates, winner, lambda i: weights[i])
    return finish_result(
        ctx,
        "inverse_entropy",
        candidates,
        chosen,
        votes=candidate_votes(candidates, totals),
        stop_reason=outcome.stop_reason,
        explanation=(
            f"inverse-entropy weighted vote (top-{params.top_k}) over {len(samples)} "
            f"{params.mode} chains"
        ),
        details={"mode": params.mode, "aborted_samples": len(outcome.aborted)},
    )


STRATEGY = Strategy("inverse_entropy", InverseEntropyParams, inverse_entropy, __doc__)
