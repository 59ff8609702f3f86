"""Budget forcing: sequential scaling of a reasoning model's thinking (s1, "Simple test-time
scaling", arXiv 2501.19393).

Each chain thinks until it closes its thought. Where it closes the thought before it has
thought `min_thinking` tokens (or always, with `min_thinking` at the thinking cap), the
close is suppressed and the cue ("Wait") appended instead, so the model thinks on: up to
`extensions` times. At the thinking cap the thought is closed for it. Then the chain
answers. With `n` > 1 the chains run side by side and their answers vote, grouped by
math equivalence (the hybrid of sequential and parallel scaling); `n` = 1 is purely
sequential. Every segment continues from the token ids before it, so the shared prefix
hits the engine's prefix cache; the cues are written into the prompt, not generated.

It needs a reasoning model whose parser marks thoughts with a token (`</think>`): the
engine stops at that token, and the strategy writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field, model_validator

from ttscale.engine.types import Sample
from ttscale.verifiers.aggregate import plurality

from .base import (
    Candidate,
    StrategyContext,
    StrategyResult,
    finish_result,
    stepped_candidate,
)
from .params import StrategyParams
from .registry import Strategy
from .sampling import StopReason, gather_or_cancel
from .voting import candidate_votes, label_answers, pick_member

_CHAIN_STRIDE = 100
"""Sample indices (and so seeds) of chain c's segments start at c x this."""


class BudgetForcingParams(StrategyParams):
    scale_knob = "extensions"
    n: int = Field(1, ge=1, le=64, description="chains, each forced alike, whose answers vote")
    extensions: int = Field(
        2, ge=0, le=16, description="times a closed thought is reopened with the cue (K)"
    )
    cue: str = Field("Wait", min_length=1, description="written where the thought closed")
    min_thinking: int | None = Field(
        None,
        ge=1,
        description="reopen a thought closed before this many thinking tokens (default: "
        "the thinking cap, so every close is reopened while extensions last)",
    )
    answer_tokens: int = Field(
        256, ge=1, description="tokens kept for the answer after the thought closes"
    )

    @model_validator(mode="after")
    def _room_for_the_answer(self) -> BudgetForcingParams:
        if self.answer_tokens >= self.sampling.max_tokens:
            raise ValueError(
                f"answer_tokens={self.answer_tokens} leaves no thinking within "
                f"sampling.max_tokens={self.sampling.max_tokens}"
            )
        return self

    def thinking_cap(self) -> int:
        """Thinking tokens per chain: the sampling block's thinking budget, else what
        `max_tokens` leaves after the answer's allowance."""
        budget = self.sampling.thinking_token_budget
        left = self.sampling.max_tokens - self.answer_tokens
        return left if budget is None else min(budget, left)

    def samples_requested(self) -> int:
        return self.n

    def needs_thought_closes(self) -> bool:
        return True

    def draws_whole_samples(self) -> bool:
        return False  # segments, continued after each forced close

    def samples_in_all(self) -> None:
        return None  # segments, as many as the closes and extensions make


@dataclass
class Chain:
    """One chain's thinking, as it grows segment by segment."""

    number: int
    prompt_ids: list[int]
    thought: list[str] = field(default_factory=list)
    thinking_tokens: int = 0
    """Thinking tokens the model generated (the cues are written, not counted)."""
    generated: int = 0
    """Every token the chain generated: its thinking and the closes it wrote."""
    extensions: int = 0
    segments: int = 0
    forced_close: bool = False
    """The thinking cap closed the thought, not the model."""

    def next_index(self) -> int:
        self.segments += 1
        return self.number * _CHAIN_STRIDE + self.segments - 1


async def _think(ctx: StrategyContext, params: BudgetForcingParams, chain: Chain) -> bool:
    """Let the chain think to its cap, reopening closes with the cue; False when the
    budget ran out before the chain could answer."""
    closes = ctx.engine.info.thought_closes
    cap, floor = params.thinking_cap(), params.min_thinking or params.thinking_cap()
    cue = await ctx.engine.tokenize(params.cue)
    while chain.thinking_tokens < cap:
        spec = params.sampling.replace(
            max_tokens=cap - chain.thinking_tokens,
            min_tokens=0,
            stop=(),
            stop_token_ids=closes,
            thinking_token_budget=None,  # the strategy closes thoughts itself
        )
        drawn = await ctx.sample(
            spec, 1, prompt_ids=chain.prompt_ids, first_index=chain.next_index()
        )
        if not drawn.finished:
            return False
        segment = drawn.finished[0]
        chain.generated += segment.num_tokens
        # a stop is the model closing its thought, or ending the sample inside it (end of
        # sequence): either way its last token is dropped and the strategy decides
        stopped = segment.finish_reason == "stop" and bool(segment.token_ids)
        body = segment.token_ids[:-1] if stopped else segment.token_ids
        chain.prompt_ids += body
        chain.thinking_tokens += len(body)
        chain.thought.append(segment.text)
        if not stopped:  # at the cap: the thought is closed for the model
            chain.forced_close = True
            return True
        if chain.extensions >= params.extensions or chain.thinking_tokens >= floor:
            return True
        chain.prompt_ids += cue
        chain.thought.append(params.cue)
        chain.extensions += 1
    chain.forced_close = True
    return True


async def _answer(ctx: StrategyContext, params: BudgetForcingParams, chain: Chain) -> Sample | None:
    """Close the thought and let the chain answer within what is left of max_tokens."""
    chain.prompt_ids += list(ctx.engine.info.thought_closes[:1])
    room = params.sampling.max_tokens - chain.thinking_tokens
    spec = params.sampling.replace(max_tokens=room, thinking_token_budget=None)
    index = chain.next_index()
    drawn = await ctx.sample(spec, 1, prompt_ids=chain.prompt_ids, first_index=index)
    return drawn.finished[0] if drawn.finished else None


async def _chain(
    ctx: StrategyContext, params: BudgetForcingParams, number: int
) -> tuple[Chain, Sample | None]:
    chain = Chain(number, list(ctx.prompt_ids))
    if not await _think(ctx, params, chain):
        return chain, None
    return chain, await _answer(ctx, params, chain)


def _candidate(chain: Chain, answer: Sample | None, params: BudgetForcingParams) -> Candidate:
    reasoning = "".join(chain.thought)
    content = answer.text if answer is not None else ""
    return stepped_candidate(
        chain.number,
        params,
        text=reasoning + content,
        answer_text=content,
        reasoning=reasoning,
        tokens=chain.generated + (answer.num_tokens if answer is not None else 0),
        reasoning_tokens=chain.thinking_tokens,
        finish_reason=answer.finish_reason if answer is not None else "length",
        scores={"extensions": float(chain.extensions)},
    )


async def budget_forcing(ctx: StrategyContext, params: BudgetForcingParams) -> StrategyResult:
    chains = await gather_or_cancel(_chain(ctx, params, c) for c in range(params.n))
    candidates = [_candidate(c, a, params) for c, a in chains]
    labels = await label_answers(ctx.verifiers.grader, candidates, params.answer)
    winner, totals = plurality(labels)
    chosen = pick_member(candidates, winner)
    answered = [c for c, a in chains if a is not None]
    stop_reason: StopReason = "completed" if len(answered) == len(chains) else "budget"
    forced = sum(c.forced_close for c, _ in chains)
    return finish_result(
        ctx,
        "budget_forcing",
        candidates,
        chosen,
        votes=candidate_votes(candidates, totals),
        stop_reason=stop_reason,
        explanation=(
            f"{len(chains)} chain(s) thinking up to {params.thinking_cap()} tokens, "
            f"reopened {sum(c.extensions for c, _ in chains)} time(s) with {params.cue!r}, "
            f"{forced} closed at the cap; plurality vote over their answers"
        ),
        details={
            "thinking_cap": params.thinking_cap(),
            "chains": [
                {
                    "extensions": c.extensions,
                    "thinking_tokens": c.thinking_tokens,
                    "forced_close": c.forced_close,
                    "answered": a is not None,
                }
                for c, a in chains
            ],
        },
    )


STRATEGY = Strategy("budget_forcing", BudgetForcingParams, budget_forcing, __doc__)
