"""Particle filtering over reasoning steps (Puri et al. 2025, "A Probabilistic Inference
Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods",
arXiv 2502.01618).

Beam search keeps only the best-scored steps, so it trusts an imperfect reward model
completely: a path pruned early never comes back. Particle filtering treats the process
reward model as an approximate likelihood and *samples* which partial solutions go on,
in proportion to their weights, so lower-scored paths survive with some probability and
the population stays diverse.

`particles` partial solutions advance one step (ending at a blank line) at a time; the
next steps of all live particles are submitted together, each continuing from its
particle's token ids. The process verifier scores each new step given the question and
the steps before it: the score is its reward r in [0, 1] for that last step, which sees
the whole partial solution (the paper's "model-based aggregation"). A particle's weight
is the softmax over the live particles of logit(r) / `temperature` (r clipped to
[1e-7, 1 - 1e-7]), as in the authors' code: at temperature 1 a weight is proportional to
the odds r / (1 - r). The live particles are then resampled by weight, `systematic`
(the default: one uniform draw, so a particle of weight w is copied floor(P w) or
ceil(P w) times and a strong particle is not lost by chance, as it can be with few
particles) or `multinomial` (independent draws, as in the authors' code). Draws are
seeded from the request's seed when it has one.

A particle is finished at end of sequence, at a `\\boxed` answer, or when a step hits its
token limit (the rule of step_search); finished particles are set aside and never
resampled, so the live population shrinks as particles finish. The loop ends when every
particle has finished, after `max_steps`, or when the budget runs out. Final weights are
the softmax of logit(last step score) / `temperature` over the finished particles (over
the unfinished ones if none finished). The answer is the particle with the highest final
weight (`aggregate="best"`), or the winner of a vote of the particles' answers grouped by
math equivalence, each weighted by its final weight (`aggregate="vote"`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ttscale.engine.types import Sample, SamplingSpec
from ttscale.verifiers.aggregate import argmax_first, weighted_vote

from .base import (
    Candidate,
    StrategyContext,
    StrategyResult,
    finish_result,
    stepped_candidate,
)
from .params import StrategyParams, VerifierUse
from .registry import Strategy
from .sampling import SamplingOutcome, StopReason, gather_or_cancel
from .scoring import score_steps
from .steps import STEP_SEPARATOR, ends_solution
from .voting import candidate_votes, label_answers, pick_member

Resampling = Literal["systematic", "multinomial"]

_DEPTH_STRIDE = 1_000
"""Sample indices of one step's draws (at most 64 particles), so each draw has its own
engine request id and seed."""
_CLIP = 1e-7
"""Scores are clipped to [_CLIP, 1 - _CLIP] before the logit, so 0 and 1 stay finite."""


class ParticleFilteringParams(StrategyParams):
    scale_knob = "particles"

    verifier: str = Field(..., description="process verifier scoring each new step")
    particles: int = Field(4, ge=1, le=64, description="partial solutions advanced together")
    max_steps: int = Field(8, ge=1, le=64)
    step_max_tokens: int = Field(256, ge=1)
    temperature: float = Field(
        1.0, gt=0.0, description="softmax temperature over logit(step score): lower is greedier"
    )
    resampling: Resampling = Field(
        "systematic", description="systematic (lower variance) or multinomial"
    )
    aggregate: Literal["best", "vote"] = Field(
        "best", description="highest final weight, or weighted vote over answers"
    )

    def draws_whole_samples(self) -> bool:
        return False  # steps, each a continuation of the path so far

    def verifiers_used(self) -> list[VerifierUse]:
        return [VerifierUse("verifier", self.verifier, "process")]

    def samples_at_once(self) -> int:
        """Next steps drawn per step (the server's max_n bounds it)."""
        return self.particles


@dataclass
class Particle:
    id: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    answer_text: str = ""
    thought: str = ""
    split: bool = False
    """Whether the engine splits thinking from answers (a reasoning model's steps think
    first, then close the thought and answer)."""
    reasoning_tokens: int = 0
    finished: bool = False
    finish_reason: str = "length"

    @property
    def last_score(self) -> float:
        return self.scores[-1] if self.scores else 0.0

    @property
    def reasoning(self) -> str | None:
        return self.thought if self.split else None

    def copy(self, new_id: int) -> Particle:
        return Particle(
            new_id,
            list(self.token_ids),
            self.text,
            list(self.steps),
            list(self.scores),
            self.answer_text,
            self.thought,
            self.split,
            self.reasoning_tokens,
        )

    def grow(self, sample: Sample) -> bool:
        """Append the sampled step; whether there is a new step for the verifier (a
        sample that ended with no tokens finishes the particle as it was)."""
        self.finished = ends_solution(sample)
        self.finish_reason = sample.finish_reason
        if sample.num_tokens == 0:
            return False
        self.token_ids += sample.token_ids
        self.text += sample.text
        self.answer_text += sample.answer_text
        self.thought += sample.reasoning or ""
        self.split = self.split or sample.content is not None
        self.reasoning_tokens += sample.reasoning_tokens
        self.steps.append(sample.text.strip())
        return True


def softmax_weights(scores: Sequence[float], temperature: float) -> list[float]:
    """Softmax of logit(score) / temperature: at temperature 1, proportional to the
    odds score / (1 - score)."""
    if not scores:
        return []
    logits = [_logit(s) / temperature for s in scores]
    top = max(logits)
    raw = [math.exp(x - top) for x in logits]
    total = sum(raw)
    return [r / total for r in raw]


def _logit(score: float) -> float:
    clipped = min(max(score, _CLIP), 1.0 - _CLIP)
    return math.log(clipped / (1.0 - clipped))


def resample(
    weights: Sequence[float], count: int, how: Resampling, rng: random.Random
) -> list[int]:
    """`count` parent positions drawn by weight (weights sum to 1)."""
    if how == "multinomial":
        return rng.choices(range(len(weights)), weights=weights, k=count)
    return _systematic(weights, count, rng)


def _systematic(weights: Sequence[float], count: int, rng: random.Random) -> list[int]:
    """One uniform offset and `count` evenly spaced points over the cumulative weights:
    position i is drawn floor(count * w_i) or ceil(count * w_i) times."""
    offset = rng.random() / count
    picks: list[int] = []
    position, cumulative = 0, weights[0]
    for k in range(count):
        point = offset + k / count
        while point > cumulative and position < len(weights) - 1:
            position += 1
            cumulative += weights[position]
        picks.append(position)
    return picks


@dataclass
class Population:
    """One request's particles and the record of what happened to them at each step."""

    params: ParticleFilteringParams
    rng: random.Random
    live: list[Particle] = field(default_factory=list)
    finished: list[Particle] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    depth: int = 0
    next_id: int = 0

    @classmethod
    def start(cls, params: ParticleFilteringParams) -> Population:
        population = cls(params, random.Random(params.sampling.seed))
        population.live = [population.new_particle() for _ in range(params.particles)]
        return population

    def new_particle(self, parent: Particle | None = None) -> Particle:
        self.next_id += 1
        return parent.copy(self.next_id - 1) if parent else Particle(self.next_id - 1)

    def settle(self, scored: list[Particle], then_resample: bool) -> dict[str, Any]:
        """Set the newly finished particles aside, weigh the live ones, and (when another
        step follows) resample them; returns this step's record."""
        newly_finished = [p for p in self.live if p.finished]
        self.finished += newly_finished
        self.live = [p for p in self.live if not p.finished]
        weights = softmax_weights([p.last_score for p in self.live], self.params.temperature)
        record: dict[str, Any] = {
            "step": self.depth,
            "scored": [p.id for p in scored],
            "scores": [p.last_score for p in scored],
            "finished": [p.id for p in newly_finished],
            "live": [p.id for p in self.live],
            "weights": [round(w, 6) for w in weights],
            "ess": round(1.0 / sum(w * w for w in weights), 4) if weights else 0.0,
            "children": [],
            "parents": [],
        }
        if then_resample and self.live:
            picks = resample(weights, len(self.live), self.params.resampling, self.rng)
            parents = [self.live[i] for i in picks]
            self.live = [self.new_particle(parent) for parent in parents]
            record["children"] = [p.id for p in self.live]
            record["parents"] = [p.id for p in parents]
        self.history.append(record)
        return record


async def _advance(
    ctx: StrategyContext, spec: SamplingSpec, population: Population
) -> tuple[list[Particle], bool]:
    """Every live particle's next step, all submitted together (the engine batches them;
    cancelling the run aborts them all). Returns the particles with a new step to score,
    and whether the budget (or the context) stopped a draw."""
    live = population.live
    base = population.depth * _DEPTH_STRIDE
    draws: list[SamplingOutcome] = await gather_or_cancel(
        ctx.sample(spec, 1, prompt_ids=ctx.prompt_ids + p.token_ids, first_index=base + slot)
        for slot, p in enumerate(live)
    )
    stepped = [
        particle
        for particle, drawn in zip(live, draws, strict=True)
        if drawn.finished and particle.grow(drawn.finished[0])
    ]
    return stepped, any(drawn.stop_reason == "budget" for drawn in draws)


async def _score(ctx: StrategyContext, verifier: str, stepped: list[Particle]) -> bool:
    """Score each particle's newest step (one verifier call for all); False when the
    verifier budget cannot pay."""
    if not stepped:
        return True
    scored = await score_steps(ctx, verifier, [p.steps for p in stepped], last_only=True)
    if scored is None:
        return False
    for particle, scores in zip(stepped, scored, strict=True):
        particle.scores.append(scores[-1] if scores else 0.0)
    return True


async def particle_filtering(
    ctx: StrategyContext, params: ParticleFilteringParams
) -> StrategyResult:
    spec = params.sampling.replace(
        max_tokens=params.step_max_tokens, stop=(STEP_SEPARATOR,), include_stop_str_in_output=True
    )
    population = Population.start(params)
    stop_reason: StopReason = "completed"
    while population.live and population.depth < params.max_steps:
        population.depth += 1
        stepped, out_of_budget = await _advance(ctx, spec, population)
        if out_of_budget:
            stop_reason = "budget"
        if not await _score(ctx, params.verifier, stepped):
            stop_reason = "budget"
        last = stop_reason == "budget" or population.depth == params.max_steps
        record = population.settle(stepped, then_resample=not last)
        await ctx.report(
            "step",
            step=population.depth,
            scores=record["scores"],
            live=len(population.live),
            finished=len(population.finished),
            ess=record["ess"],
            particles=record["scored"],
            weights=record["weights"],
            live_ids=record["live"],
            finished_ids=record["finished"],
            parents=record["parents"],
            children=record["children"],
        )
        if stop_reason == "budget":
            break
    return await _result(ctx, params, population, stop_reason)


def _candidate(particle: Particle, weight: float, params: ParticleFilteringParams) -> Candidate:
    return stepped_candidate(
        particle.id,
        params,
        text=particle.text,
        answer_text=particle.answer_text,
        reasoning=particle.reasoning,
        tokens=len(particle.token_ids),
        reasoning_tokens=particle.reasoning_tokens,
        finish_reason=particle.finish_reason if particle.finished else "length",
        scores={"weight": weight, "last_step": particle.last_score, "steps": particle.scores},
    )


async def _pick(
    ctx: StrategyContext,
    params: ParticleFilteringParams,
    candidates: list[Candidate],
    weights: list[float],
) -> tuple[int | None, dict[str, float], str]:
    """(position of the pick, vote table, how it was chosen) under `params.aggregate`."""
    best = argmax_first(weights)
    if params.aggregate == "best":
        return best, {}, "highest final weight"
    labels = await label_answers(ctx.verifiers.grader, candidates, params.answer)
    winner, totals = weighted_vote(labels, weights)
    chosen = pick_member(candidates, winner, lambda i: weights[i])
    if chosen is None:
        return best, {}, "no particle gave an answer to vote on: highest final weight"
    return chosen, candidate_votes(candidates, totals), "vote weighted by final weight"


async def _result(
    ctx: StrategyContext,
    params: ParticleFilteringParams,
    population: Population,
    stop_reason: StopReason,
) -> StrategyResult:
    pool = population.finished or population.live
    weights = softmax_weights([p.last_score for p in pool], params.temperature)
    candidates = [_candidate(p, w, params) for p, w in zip(pool, weights, strict=True)]
    chosen, votes, rule = await _pick(ctx, params, candidates, weights)
    which = "finished" if population.finished else "unfinished"
    return finish_result(
        ctx,
        "particle_filtering",
        candidates,
        chosen,
        votes=votes,
        stop_reason=stop_reason,
        explanation=(
            f"particle filtering ({params.particles} particles, {params.resampling} "
            f"resampling, temperature {params.temperature}) over {population.depth} steps "
            f"scored by {params.verifier}; {rule} of {len(pool)} {which} particles"
        ),
        details={
            "steps": population.depth,
            "history": population.history,
            "final_weights": {str(p.id): round(w, 6) for p, w in zip(pool, weights, strict=True)},
            "prefix_cache_hit_rate": ctx.budget.usage.prefix_cache_hit_rate,
        },
    )


STRATEGY = Strategy("particle_filtering", ParticleFilteringParams, particle_filtering, __doc__)
