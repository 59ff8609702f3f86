"""Universal self-consistency: N samples, then the same model names the one most
consistent with the others.

After Chen et al. 2023, "Universal Self-Consistency for Large Language Model Generation"
(arXiv 2311.17311): for free-form outputs (summaries, explanations, code), where there is
no answer to extract and vote on, the N responses are shown to the policy model, numbered,
in one more generation that asks which is the most consistent by majority consensus; the
first "Response k" of its reply (k in 1..N) is the pick. A reply that names none, or only
numbers out of range, picks the first sample, and the evidence says so. The selection is
billed as verifier tokens (its prompt and what it generates), checked against the budget
before it starts, and aborted at the wall-time cap; when the budget cannot pay for it,
the first sample is the pick and the stop reason is "budget".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from ttscale.engine.protocol import Generation
from ttscale.engine.types import GenerationResult, Sample, SamplingSpec
from ttscale.verifiers.protocol import VerifierUsage

from .base import Candidate, StrategyContext, StrategyResult, finish_result, to_candidate
from .params import StrategyParams
from .registry import Strategy
from .sampling import StopReason
from .selection_prompt import SELECTOR_PROMPT, FittedPrompt, check_template, fit_prompt, read_choice

NAME = "universal_self_consistency"

Fallback = Literal["no_response", "out_of_range", "budget", "wall_time", "context"]
"""Why the first sample is the pick without the selector's word: its reply named no
response, or only numbers out of range; the verifier budget or the wall time could not
pay for the selection (or the wall time ran out during it); the context cannot hold it."""


class UniversalSelfConsistencyParams(StrategyParams):
    n: int = Field(8, ge=1, le=1024, description="samples to draw: the responses compared")
    selector_max_tokens: int = Field(
        32,
        ge=1,
        le=4096,
        description="tokens the selection may generate (its reply names the response first)",
    )
    selector_prompt: str = Field(
        SELECTOR_PROMPT,
        description="the selection's instruction, one user turn: {responses} = the responses, "
        "numbered 'Response 1:' and on; {question} = the request's last message (optional)",
    )
    parallel: int | None = Field(None, ge=1, description="samples in flight (default: n)")

    @field_validator("selector_prompt")
    @classmethod
    def _placeholders(cls, template: str) -> str:
        return check_template(template)

    def samples_requested(self) -> int:
        return self.n

    def draws_independent_samples(self) -> bool:
        return True


@dataclass
class Selection:
    """How the pick was made: by the selector's reply, or by a fallback and why."""

    position: int | None
    """The pick's position in the candidates (None: no candidates)."""
    explanation: str
    fallback: Fallback | None = None
    """Why the first sample is the pick (None: the selector's, or nothing to select)."""
    response: int | None = None
    """The response number (from 1) the selector named."""
    text: str | None = None
    """The selector's reply, its thinking included (None: not asked)."""
    named: list[int] = field(default_factory=list)
    fitted: FittedPrompt | None = None
    finish_reason: str | None = None

    @property
    def over_budget(self) -> bool:
        return self.fallback in ("budget", "wall_time", "context")

    def evidence(self, candidates: list[Candidate]) -> dict[str, Any]:
        fitted = self.fitted
        return {
            "text": self.text,
            "response": self.response,
            "named": self.named,
            "fallback": self.fallback,
            "finish_reason": self.finish_reason,
            "responses": [c.index for c in candidates],
            "prompt_tokens": len(fitted.prompt_ids) if fitted else None,
            "cut_responses": fitted.cut if fitted else [],
            "kept_tokens": fitted.kept_tokens if fitted else None,
        }


async def universal_self_consistency(
    ctx: StrategyContext, params: UniversalSelfConsistencyParams
) -> StrategyResult:
    outcome = await ctx.sample(params.sampling, params.n, parallel=params.parallel)
    candidates = [to_candidate(s, params) for s in outcome.finished]
    selection = await select(ctx, params, candidates)
    chosen = candidates[selection.position].index if selection.position is not None else None
    await ctx.report(
        "selection", response=selection.response, chosen=chosen, fallback=selection.fallback
    )
    stop_reason: StopReason = "budget" if selection.over_budget else outcome.stop_reason
    return finish_result(
        ctx,
        NAME,
        candidates,
        selection.position,
        stop_reason=stop_reason,
        explanation=selection.explanation,
        details={
            "aborted_samples": len(outcome.aborted),
            "selection": selection.evidence(candidates),
        },
    )


async def select(
    ctx: StrategyContext, params: UniversalSelfConsistencyParams, candidates: list[Candidate]
) -> Selection:
    """Ask the policy model which candidate is the most consistent (each read by its
    answer part), within the budget; the first candidate when it cannot say."""
    count = len(candidates)
    if count == 0:
        return Selection(None, "no sample finished: nothing to select from")
    if count == 1:
        return Selection(0, "one sample finished: nothing to select from")
    texts = [c.answer_text for c in candidates]
    fitted = await fit_prompt(
        ctx.engine, params.selector_prompt, ctx.question, texts, params.selector_max_tokens
    )
    if fitted is None:
        why = f"the {count} responses cannot fit the context with the selection's reply"
        return _fallback("context", why)
    most = len(fitted.prompt_ids) + params.selector_max_tokens
    if not ctx.budget.can_verify(most):
        why = f"the verifier budget cannot pay for the selection (up to {most} tokens)"
        return _fallback("budget", why, fitted=fitted)
    if ctx.budget.time_left_s() == 0.0:
        why = "the wall-time budget ran out before the selection"
        return _fallback("wall_time", why, fitted=fitted)
    spec = SamplingSpec(temperature=0.0, max_tokens=params.selector_max_tokens)
    reply, timed_out = await _ask(ctx, fitted.prompt_ids, spec)
    asked = {"text": reply.text, "fitted": fitted, "finish_reason": reply.finish_reason}
    if timed_out:
        why = "the wall-time budget ran out during the selection"
        return _fallback("wall_time", why, **asked)
    response, named = read_choice(reply.answer_text, count)
    if response is not None:
        how = f"the selector named Response {response} of {count} the most consistent"
        return Selection(response - 1, how, response=response, named=named, **asked)
    if named:
        why = f"the selector named Response {named[0]}, not one of 1..{count}"
        return _fallback("out_of_range", why, named=named, **asked)
    why = "the selector's reply named no response"
    if reply.content == "" and reply.reasoning:
        why += f" (its thought did not close within {params.selector_max_tokens} tokens)"
    return _fallback("no_response", why, **asked)


def _fallback(kind: Fallback, why: str, **found: Any) -> Selection:
    return Selection(0, f"{why}: fell back to the first sample", fallback=kind, **found)


async def _ask(
    ctx: StrategyContext, prompt_ids: list[int], spec: SamplingSpec
) -> tuple[Sample, bool]:
    """The selector's reply and whether the wall-time cap cut it; billed as verifier
    tokens (an aborted reply too, and on cancellation)."""
    generation = ctx.engine.generate(prompt_ids, spec, request_id=f"{ctx.request_id}-select")
    waiting = asyncio.ensure_future(generation.result())
    try:
        done, _ = await asyncio.wait({waiting}, timeout=ctx.budget.time_left_s())
    except asyncio.CancelledError:
        _bill(ctx, await asyncio.shield(_stop(generation, waiting)))
        raise
    result = waiting.result() if done else await _stop(generation, waiting)
    _bill(ctx, result)
    return result.samples[0], not done


async def _stop(
    generation: Generation, waiting: asyncio.Future[GenerationResult]
) -> GenerationResult:
    """Abort the reply and return what it had generated (to bill it)."""
    stopped = await generation.abort()
    await asyncio.gather(waiting, return_exceptions=True)
    return stopped


def _bill(ctx: StrategyContext, result: GenerationResult) -> None:
    """As the judge bills its calls: prompt, cached prompt and generated tokens, with the
    policy model's shape for the FLOPs (the selector is the policy model)."""
    usage = VerifierUsage(
        prompt_tokens=result.prompt_tokens,
        cached_prompt_tokens=result.cached_prompt_tokens,
        generated_tokens=result.generated_tokens,
    )
    ctx.budget.charge_verifier(usage, ctx.engine.info.shape)


STRATEGY = Strategy(NAME, UniversalSelfConsistencyParams, universal_self_consistency, __doc__)
