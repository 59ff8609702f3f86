"""Step-level verifier-guided search with conditional step-level self-refinement
("Step-level Verifier-guided Hybrid Test-Time Scaling", arXiv 2507.15512; beam search
after Snell et al.).

Steps end at a blank line ("\\n\\n"). At each depth every live beam is expanded into
`expansions` candidate next steps, sampled by continuing from the beam's token ids (the
shared prefix hits vLLM's prefix cache); a process verifier scores each new step given
the question and the steps before it, and the `beam_width` best-scoring steps survive.
If a surviving step scores <= `refine_threshold`, the model is asked to critique and
rewrite it; the rewrite replaces it only if its score rises, for at most
`refine_rounds` rounds. A beam is finished at end of sequence, at a `\\boxed` answer,
or when a step hits its token limit. The final pick is the finished beam (or, if none
finished, any beam) with the highest minimum step score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ttscale.engine.types import Sample, SamplingSpec
from ttscale.verifiers.aggregate import argmax_first

from .base import (
    StrategyContext,
    StrategyResult,
    finish_result,
    stepped_candidate,
)
from .params import StrategyParams, VerifierUse
from .registry import Strategy
from .sampling import gather_or_cancel
from .scoring import score_steps
from .steps import STEP_SEPARATOR, ends_solution

REWRITE_PROMPT = (
    "Problem:\n{question}\n\nSolution so far:\n{previous}\n\nProposed next step:\n{step}\n\n"
    "The proposed next step may contain an error. Critique it in one or two sentences, "
    "then write a corrected version of the step after the line 'Rewritten step:'."
)
_REWRITE_MARK = "Rewritten step:"
_DEPTH_STRIDE = 10_000
"""Sample indices of one depth's expansions (beam_width x expansions <= 64 x 64)."""
_REFINE_BASE = 1_000_000


class StepSearchParams(StrategyParams):
    scale_knob = "expansions"

    verifier: str = Field(..., description="process verifier scoring each new step")
    beam_width: int = Field(2, ge=1, le=64)
    expansions: int = Field(4, ge=1, le=64, description="candidate steps per beam and depth")
    max_steps: int = Field(8, ge=1, le=64)
    step_max_tokens: int = Field(256, ge=1)
    refine: bool = True
    refine_threshold: float = Field(0.9, ge=0.0, le=1.0)
    refine_rounds: int = Field(3, ge=0, le=10)

    def draws_whole_samples(self) -> bool:
        return False  # steps, each a continuation of the path so far

    def verifiers_used(self) -> list[VerifierUse]:
        return [VerifierUse("verifier", self.verifier, "process")]

    def samples_at_once(self) -> int:
        """Candidate steps drawn per depth (the server's max_n bounds it)."""
        return self.beam_width * self.expansions


@dataclass
class Beam:
    id: int = 0
    """The beam's number in its request (0: the empty root); progress events name it."""
    parent: int | None = None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    step_token_counts: list[int] = field(default_factory=list)
    step_texts: list[str] = field(default_factory=list)
    """Each step's tokens and raw text (separator included), so a step can be replaced."""
    step_thoughts: list[str] = field(default_factory=list)
    step_answers: list[str] = field(default_factory=list)
    """Each step's thinking and answer parts (a reasoning model's steps think first)."""
    split: bool = False
    """Whether the engine splits thinking from answers (a reasoning model)."""
    reasoning_tokens: int = 0
    finished: bool = False
    refinements: int = 0

    @property
    def worst(self) -> float:
        return min(self.scores) if self.scores else 0.0

    @property
    def answer_text(self) -> str:
        return "".join(self.step_answers)

    @property
    def reasoning(self) -> str | None:
        return "".join(self.step_thoughts) if self.split else None


def _grow(beam: Beam, sample: Sample) -> Beam:
    return Beam(
        parent=beam.id,
        token_ids=beam.token_ids + sample.token_ids,
        text=beam.text + sample.text,
        steps=[*beam.steps, sample.text.strip()],
        scores=list(beam.scores),
        step_token_counts=[*beam.step_token_counts, sample.num_tokens],
        step_texts=[*beam.step_texts, sample.text],
        step_thoughts=[*beam.step_thoughts, sample.reasoning or ""],
        step_answers=[*beam.step_answers, sample.answer_text],
        split=beam.split or sample.content is not None,
        reasoning_tokens=beam.reasoning_tokens + sample.reasoning_tokens,
        finished=ends_solution(sample),
        refinements=beam.refinements,
    )


async def _replace_last_step(ctx: StrategyContext, beam: Beam, rewrite: str, score: float) -> None:
    """Swap the newest step for its rewrite. Its token ids come from tokenising the
    rewrite: the one place the search continues from re-tokenised text."""
    raw = rewrite + ("" if beam.finished else STEP_SEPARATOR)
    ids = await ctx.engine.tokenize(raw)
    beam.token_ids = beam.token_ids[: len(beam.token_ids) - beam.step_token_counts[-1]] + ids
    beam.text = beam.text[: len(beam.text) - len(beam.step_texts[-1])] + raw
    beam.step_token_counts[-1], beam.step_texts[-1] = len(ids), raw
    beam.steps[-1], beam.scores[-1] = rewrite, score
    answered = bool(beam.step_answers[-1]) or not beam.split  # the step was in the answer
    if answered:
        beam.step_answers[-1] = raw
    else:
        beam.step_thoughts[-1] = raw
    beam.finished = beam.finished or (answered and "\\boxed" in rewrite)


def _refine_index(depth: int, slot: int, attempt: int) -> int:
    """Sample index of a rewrite: distinct from every expansion and from the rewrites
    of the other survivors, which run concurrently (the index names the engine request
    and derives the seed)."""
    return _REFINE_BASE + (depth * 64 + slot) * 16 + attempt


async def _refine(
    ctx: StrategyContext, params: StepSearchParams, beam: Beam, depth: int, slot: int
) -> Beam:
    """Critique-and-rewrite the beam's newest step while it scores <= the threshold. A
    reasoning model's step that closes its thought is kept as it is: a rewrite in its
    place would lose the close."""
    if beam.step_thoughts[-1] and beam.step_answers[-1]:
        return beam
    for attempt in range(params.refine_rounds):
        if beam.scores[-1] > params.refine_threshold:
            break
        prompt = REWRITE_PROMPT.format(
            question=ctx.question,
            previous=STEP_SEPARATOR.join(beam.steps[:-1]) or "(nothing yet)",
            step=beam.steps[-1],
        )
        messages = [*ctx.messages[:-1], {"role": "user", "content": prompt}]
        spec = params.sampling.replace(max_tokens=2 * params.step_max_tokens)
        drawn = await ctx.sample(
            spec,
            1,
            prompt_ids=await ctx.engine.render_chat(messages),
            first_index=_refine_index(depth, slot, attempt),
        )
        beam.refinements += 1
        if not drawn.finished:
            break
        text = drawn.finished[0].answer_text  # a reasoning critic's answer, not its thoughts
        rewrite = text.split(_REWRITE_MARK, 1)[-1].strip()
        if not rewrite:
            continue
        scored = await score_steps(
            ctx, params.verifier, [[*beam.steps[:-1], rewrite]], last_only=True
        )
        if scored is None:
            break
        new_score = scored[0][-1]
        await ctx.report("refine", step=len(beam.steps), old=beam.scores[-1], new=new_score)
        if new_score > beam.scores[-1]:
            await _replace_last_step(ctx, beam, rewrite, new_score)
    return beam


async def _expand(
    ctx: StrategyContext,
    params: StepSearchParams,
    spec: SamplingSpec,
    beams: list[Beam],
    depth: int,
) -> tuple[list[Beam], bool]:
    """Every live beam grown by `expansions` sampled next steps, and whether the budget
    ran out while drawing them. All beams' samples are submitted together, so the
    engine batches them (and each continues from its beam's token ids: prefix hits)."""
    live = [b for b in beams if not b.finished]
    draws = await gather_or_cancel(
        (
            ctx.sample(
                spec,
                params.expansions,
                prompt_ids=ctx.prompt_ids + beam.token_ids,
                first_index=depth * _DEPTH_STRIDE + number * params.expansions,
            )
            for number, beam in enumerate(live)
        )
    )
    grown = [
        _grow(beam, s)
        for beam, drawn in zip(live, draws, strict=True)
        for s in drawn.finished
        if s.num_tokens > 0
    ]
    return grown, any(drawn.stop_reason == "budget" for drawn in draws)


def _tree_nodes(grown: list[Beam], survivors: list[Beam]) -> list[dict[str, Any]]:
    """This depth's new beams for a tree view: each with its parent, its newest step's
    score (after any rewrite), and whether it survived the cut to `beam_width`."""
    kept = {id(b) for b in survivors}
    return [
        {
            "id": b.id,
            "parent": b.parent,
            "score": b.scores[-1],
            "kept": id(b) in kept,
            "finished": b.finished,
        }
        for b in grown
    ]


async def step_search(ctx: StrategyContext, params: StepSearchParams) -> StrategyResult:
    spec = params.sampling.replace(
        max_tokens=params.step_max_tokens, stop=(STEP_SEPARATOR,), include_stop_str_in_output=True
    )
    beams = [Beam()]
    next_id = 1
    stop_reason = "completed"
    depth = 0
    while depth < params.max_steps and any(not b.finished for b in beams):
        depth += 1
        grown, out_of_budget = await _expand(ctx, params, spec, beams, depth)
        if out_of_budget:
            stop_reason = "budget"
        if not grown:
            break
        for number, beam in enumerate(grown, start=next_id):
            beam.id = number
        next_id += len(grown)
        scored = await score_steps(ctx, params.verifier, [b.steps for b in grown], last_only=True)
        if scored is None:
            stop_reason = "budget"
            break
        for beam, scores in zip(grown, scored, strict=True):
            beam.scores.append(scores[-1] if scores else 0.0)
        grown.sort(key=lambda b: -b.scores[-1])
        survivors = grown[: params.beam_width]
        if params.refine:
            survivors = await gather_or_cancel(
                _refine(ctx, params, b, depth, slot) for slot, b in enumerate(survivors)
            )
        beams = [b for b in beams if b.finished] + survivors
        await ctx.report(
            "depth",
            depth=depth,
            best_step_score=survivors[0].scores[-1],
            beams=len(beams),
            nodes=_tree_nodes(grown, survivors),
        )
        if stop_reason == "budget":
            break

    pool = [b for b in beams if b.finished] or beams
    best = argmax_first([b.worst for b in pool])
    candidates = [
        stepped_candidate(
            i,
            params,
            text=b.text,
            answer_text=b.answer_text,
            reasoning=b.reasoning,
            tokens=len(b.token_ids),
            reasoning_tokens=b.reasoning_tokens,
            finish_reason="stop" if b.finished else "length",
            scores={"min_step": b.worst, "steps": b.scores},
        )
        for i, b in enumerate(pool)
    ]
    return finish_result(
        ctx,
        "step_search",
        candidates,
        best,
        stop_reason=stop_reason,
        explanation=(
            f"beam search (width {params.beam_width}, {params.expansions} expansions) over "
            f"{depth} steps scored by {params.verifier}; highest minimum step score"
        ),
        details={
            "depth": depth,
            "refinements": sum(b.refinements for b in pool),
            "prefix_cache_hit_rate": ctx.budget.usage.prefix_cache_hit_rate,
        },
    )


STRATEGY = Strategy("step_search", StepSearchParams, step_search, __doc__)
