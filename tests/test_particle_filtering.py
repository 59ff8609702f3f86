"""Particle filtering: weights from the process verifier, resampling by weight, finished
particles set aside, budgets, and the two ways of choosing the answer.

The rules are pinned on the scripted engine (each step's text is chosen by the step and
the particle's slot, so the verifier's scores decide the weights exactly); the last test
runs the strategy through the HTTP server on the real engine with a tiny PRM on vLLM's
pooling runner.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ttscale.strategies.base import StrategyContext, Verifiers
from ttscale.strategies.budget import Budget, BudgetLimits
from ttscale.strategies.particle_filtering import (
    ParticleFilteringParams,
    particle_filtering,
    resample,
    softmax_weights,
)
from ttscale.strategies.registry import discover
from ttscale.strategies.strategy_choice import split_model_name
from ttscale.verifiers.protocol import StepScores, VerifierUsage

from .support.fakes import FakeVerifier, Scripted, ScriptedEngine
from .support.servers import serving_engine
from .support.tiny_models import TINY_MODEL_NAME, tiny_reward_model_dir

QUESTION = "What is x?"
SEEDED = {"temperature": 0.8, "max_tokens": 64, "seed": 0}
"""Seed 0: a draw's seed is its sample index, step * 1000 + the particle's slot."""


class StepTableVerifier(FakeVerifier):
    """Scores a step by the first key of `table` it starts with (else `default`); bills
    one verifier token per character of the solutions it reads."""

    def __init__(self, table: dict[str, float], default: float = 0.5) -> None:
        self._table = table
        self._default = default

    def _score(self, step: str) -> float:
        return next((v for k, v in self._table.items() if step.startswith(k)), self._default)

    async def estimate_step_tokens(self, question: str, solutions, *, last_only=False) -> int:
        return sum(len(step) for steps in solutions for step in steps)

    async def score_steps(
        self, question: str, solutions, *, last_only=False, request_id=None
    ) -> StepScores:
        usage = VerifierUsage(prompt_tokens=sum(len(step) for s in solutions for step in s))
        return StepScores([[self._score(step) for step in s] for s in solutions], usage)


def particle_engine(step_text: Callable[[int, int], str], seconds: float = 0.0) -> ScriptedEngine:
    """The step written by the particle in `slot` after `depth` earlier steps."""

    def script(prompt: list[int], spec, index: int) -> Scripted:
        depth = "".join(map(chr, prompt)).count("\n\n")
        return Scripted(step_text(depth, spec.seed % 1000), seconds)

    return ScriptedEngine(script)


def boxed_at(final_depth: int) -> Callable[[int, int], str]:
    """Step `d{depth}s{slot}`; at `final_depth` the step writes the slot as its answer."""

    def text(depth: int, slot: int) -> str:
        if depth >= final_depth:
            return f"d{depth}s{slot} \\boxed{{{slot}}}"
        return f"d{depth}s{slot}\n\n"

    return text


async def context(
    engine: ScriptedEngine, grader, verifier: StepTableVerifier, limits: BudgetLimits | None = None
) -> StrategyContext:
    messages = [{"role": "user", "content": QUESTION}]
    return StrategyContext(
        engine=engine,
        verifiers=Verifiers(grader, {}, {"prm": verifier}),
        budget=Budget(limits or BudgetLimits()),
        messages=messages,
        prompt_ids=await engine.render_chat(messages),
        question=QUESTION,
    )


def params(**changes: Any) -> ParticleFilteringParams:
    return ParticleFilteringParams(verifier="prm", sampling=SEEDED, **changes)


# --- weights and resampling, as functions -----------------------------------------------


def test_weights_are_a_softmax_of_the_score_logit():
    # logit(r) = ln(r / (1 - r)): at temperature 1 the weights are the odds, normalised
    odds = [0.6 / 0.4, 0.8 / 0.2]
    assert softmax_weights([0.6, 0.8], 1.0) == pytest.approx([o / sum(odds) for o in odds])
    # temperature 0.5 doubles each logit: the odds are squared, the weights sharper
    squared = [o**2 for o in odds]
    assert softmax_weights([0.6, 0.8], 0.5) == pytest.approx([o / sum(squared) for o in squared])
    # scores of 0 and 1 are clipped, so the weights stay finite
    assert all(math.isfinite(w) for w in softmax_weights([0.0, 1.0, 0.5], 1.0))


@pytest.mark.parametrize("how", ["systematic", "multinomial"])
def test_resampling_is_reproducible_for_a_seed(how):
    weights = [0.1, 0.45, 0.05, 0.4]
    first = resample(weights, 8, how, random.Random(11))
    again = resample(weights, 8, how, random.Random(11))
    assert first == again
    assert len(first) == 8 and set(first) <= {0, 1, 2, 3}


def test_systematic_resampling_copies_each_particle_by_its_weight():
    """Each particle is drawn floor(M w) or ceil(M w) times: a particle of weight >= 1/M
    is never lost by chance, as it can be with independent (multinomial) draws."""
    rng = random.Random(0)
    for _ in range(200):
        raw = [rng.random() for _ in range(5)]
        weights = [r / sum(raw) for r in raw]
        picks = resample(weights, 5, "systematic", rng)
        for position, weight in enumerate(weights):
            assert math.floor(5 * weight) <= picks.count(position) <= math.ceil(5 * weight)


# --- the strategy on the scripted engine ------------------------------------------------


async def test_a_particle_with_near_zero_weight_is_dropped_and_ancestry_recorded(grader):
    engine = particle_engine(boxed_at(final_depth=2))
    verifier = StepTableVerifier({"d0s2": 0.9, "d0": 0.0})  # the first step of slot 2 only
    ctx = await context(engine, grader, verifier)
    result = await particle_filtering(ctx, params(particles=4, max_steps=5))

    first = result.details["history"][0]
    assert first["scored"] == first["live"] == [0, 1, 2, 3]
    assert first["weights"][2] > 0.999  # odds 9 against 1e-7 / (1 - 1e-7)
    assert first["children"] == [4, 5, 6, 7] and first["parents"] == [2, 2, 2, 2]
    assert result.details["steps"] == 3
    # every finished particle descends from particle 2's first step
    assert len(result.candidates) == 4
    assert all(c.text.startswith("d0s2\n\nd1s") for c in result.candidates)
    assert result.stop_reason == "completed"


async def test_all_live_particles_step_together(grader):
    engine = particle_engine(boxed_at(final_depth=1), seconds=0.2)
    ctx = await context(engine, grader, StepTableVerifier({}))
    most_at_once = 0

    async def watch() -> None:
        nonlocal most_at_once
        while True:
            most_at_once = max(most_at_once, await engine.num_running())
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        result = await particle_filtering(ctx, params(particles=4))
    finally:
        watcher.cancel()
    assert most_at_once == 4
    assert result.details["steps"] == 2
    # each particle continues from its own tokens after the request's prompt
    root = ctx.prompt_ids
    assert all(prompt[: len(root)] == root for prompt, _ in engine.calls)
    assert all(
        spec.stop == ("\n\n",) and spec.include_stop_str_in_output for _, spec in engine.calls
    )


async def test_finished_particles_are_set_aside_and_not_resampled(grader):
    def text(depth: int, slot: int) -> str:
        if slot == 1 or depth >= 1:
            return f"d{depth}s{slot} \\boxed{{{slot}}}"
        return f"d{depth}s{slot}\n\n"

    engine = particle_engine(text)
    # the finished particle scores far below the others: it would not survive resampling
    ctx = await context(engine, grader, StepTableVerifier({"d0s1": 0.01}, default=0.9))
    result = await particle_filtering(ctx, params(particles=3))

    first, second = result.details["history"]
    assert first["finished"] == [1] and first["live"] == [0, 2]
    assert 1 not in first["parents"] and len(first["children"]) == 2
    assert second["scored"] == first["children"]  # only the live ones took a second step
    assert len(engine.calls) == 3 + 2
    assert [c.index for c in result.candidates] == [1, *first["children"]]
    assert result.candidates[0].answer == "1"


async def test_best_takes_the_heaviest_particle_and_vote_the_heaviest_answer(grader):
    answers = {0: "7", 1: "9", 2: "9"}

    def engine_for() -> ScriptedEngine:
        return particle_engine(lambda depth, slot: f"s{slot} \\boxed{{{answers[slot]}}}")

    verifier = StepTableVerifier({"s0": 0.8, "s1": 0.75, "s2": 0.75})
    # final weights are the normalised odds: 4, 3 and 3 out of 10
    best = await particle_filtering(
        await context(engine_for(), grader, verifier), params(particles=3)
    )
    assert [c.scores["weight"] for c in best.candidates] == pytest.approx([0.4, 0.3, 0.3])
    assert best.answer == "7" and best.votes == {}

    voted = await particle_filtering(
        await context(engine_for(), grader, verifier), params(particles=3, aggregate="vote")
    )
    assert voted.answer == "9"
    assert voted.votes == pytest.approx({"9": 0.6, "7": 0.4})
    assert "vote weighted by final weight" in voted.explanation


async def test_resampling_is_seeded_by_the_request_seed(grader):
    verifier = StepTableVerifier({"d0s0": 0.7, "d0s1": 0.6, "d1s2": 0.2})

    async def ancestry(resampling: str, seed: int) -> list[list[int]]:
        engine = particle_engine(boxed_at(final_depth=3))
        sampling = {**SEEDED, "seed": seed * 1000}  # the same step texts for every seed
        chosen = ParticleFilteringParams(
            verifier="prm", particles=4, resampling=resampling, sampling=sampling
        )
        result = await particle_filtering(await context(engine, grader, verifier), chosen)
        return [record["parents"] for record in result.details["history"]]

    for how in ("systematic", "multinomial"):
        assert await ancestry(how, 1) == await ancestry(how, 1)
    # the draws do depend on the seed
    assert len({str(await ancestry("multinomial", seed)) for seed in range(6)}) > 1


async def test_the_generated_token_cap_stops_the_run(grader):
    engine = particle_engine(boxed_at(final_depth=5))  # each step is 6 tokens
    cap = BudgetLimits(max_generated_tokens=30)
    ctx = await context(engine, grader, StepTableVerifier({}), cap)
    result = await particle_filtering(ctx, params(particles=4, step_max_tokens=6))
    # step 1 spends 4 x 6 tokens; of step 2 only one particle's 6 tokens fit
    assert result.stop_reason == "budget"
    assert result.usage.generated_tokens == 30
    assert result.details["history"][1]["scored"] == [result.details["history"][0]["children"][0]]
    # none finished: the unfinished particles are the candidates
    assert len(result.candidates) == 4
    assert all(c.finish_reason == "length" and c.answer is None for c in result.candidates)


async def test_the_verifier_token_cap_stops_the_run(grader):
    engine = particle_engine(boxed_at(final_depth=5))
    ctx = await context(engine, grader, StepTableVerifier({}), BudgetLimits(max_verifier_tokens=30))
    result = await particle_filtering(ctx, params(particles=4))
    # step 1 reads 4 x 4 characters; step 2 would read 4 x 8 more
    assert result.stop_reason == "budget"
    assert result.usage.verifier_tokens == 16
    assert result.details["steps"] == 2


async def test_progress_is_reported_once_per_step(grader):
    events: list[dict[str, Any]] = []

    async def progress(event: dict[str, Any]) -> None:
        events.append(event)

    engine = particle_engine(boxed_at(final_depth=2))
    ctx = await context(engine, grader, StepTableVerifier({}))
    ctx.progress = progress
    await particle_filtering(ctx, params(particles=2))
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert [e["live"] for e in steps] == [2, 2, 0] and steps[-1]["finished"] == 2
    assert sum(e["event"] == "sample" for e in events) == 6


async def test_each_step_event_names_the_particles_and_their_resampling(grader):
    """The `step` event carries what the step's history record holds (which particles
    were scored, their weights, who was copied into whom), so a client can draw the
    tree while the run goes on; it matches the evidence's history."""
    events: list[dict[str, Any]] = []

    async def progress(event: dict[str, Any]) -> None:
        events.append(event)

    engine = particle_engine(boxed_at(final_depth=2))
    ctx = await context(engine, grader, StepTableVerifier({}))
    ctx.progress = progress
    result = await particle_filtering(ctx, params(particles=3))
    steps = [e for e in events if e["event"] == "step"]
    history = result.details["history"]
    assert len(steps) == len(history) == 3
    for event, record in zip(steps, history, strict=True):
        assert event["particles"] == record["scored"]
        assert event["weights"] == record["weights"]
        assert event["parents"] == record["parents"]
        assert event["children"] == record["children"]
        assert event["live_ids"] == record["live"]
        assert event["finished_ids"] == record["finished"]
    assert steps[0]["particles"] == [0, 1, 2]
    assert set(steps[0]["parents"]) <= {0, 1, 2}
    assert steps[1]["particles"] == steps[0]["children"]  # the copies take the next step


async def test_cancelling_the_run_aborts_every_particle_in_flight(grader):
    engine = particle_engine(boxed_at(final_depth=3), seconds=5.0)
    ctx = await context(engine, grader, StepTableVerifier({}))
    task = asyncio.create_task(particle_filtering(ctx, params(particles=3)))
    while await engine.num_running() < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await engine.num_running() == 0
    assert ctx.budget.usage.samples_aborted == 3


# --- parameters and selection ----------------------------------------------------------


def test_parameters_name_the_process_verifier_and_the_samples_drawn_at_once():
    chosen = params(particles=6)
    (use,) = chosen.verifiers_used()
    assert (use.param, use.name, use.kind) == ("verifier", "prm", "process")
    assert chosen.samples_at_once() == 6
    with pytest.raises(ValueError, match="Extra inputs"):
        ParticleFilteringParams(verifier="prm", beam_width=2)
    with pytest.raises(ValueError):
        ParticleFilteringParams(verifier="prm", resampling="stratified")


def test_selectable_by_model_name_suffix():
    base, choice = split_model_name(
        "smollm2:particle_filtering?verifier=prm&particles=2&aggregate=vote&temperature=0.5"
    )
    assert base == "smollm2" and choice is not None
    parsed = discover()[choice.strategy].parse_params(choice.params)
    assert isinstance(parsed, ParticleFilteringParams)
    assert (parsed.particles, parsed.aggregate, parsed.temperature) == (2, "vote", 0.5)


def test_a_benchmark_grid_scales_the_particles():
    from ttscale.benchmarks.grid import SamplingConfig, build_grid

    grid = build_grid(
        ["particle_filtering?verifier=prm&aggregate=vote"], [2, 4], SamplingConfig(), discover()
    )
    assert [(s.label, s.params["particles"]) for s in grid] == [
        ("particle_filtering(verifier=prm,aggregate=vote)@2", 2),
        ("particle_filtering(verifier=prm,aggregate=vote)@4", 4),
    ]
    assert all(s.budget == {} for s in grid)  # steps, not whole samples: no fixed count


# --- the real engine and a tiny PRM, through the server ---------------------------------


async def test_served_with_a_tiny_prm_through_the_model_suffix(engine):
    suffix = "particle_filtering?verifier=prm&particles=3&max_steps=2&step_max_tokens=8"
    body = {
        "model": f"{TINY_MODEL_NAME}:{suffix}",
        "messages": [{"role": "user", "content": "What is 2 + 3? Think step by step."}],
        "seed": 3,
    }
    async with (
        serving_engine(engine, prm=[str(tiny_reward_model_dir("prm"))]) as url,
        httpx.AsyncClient(timeout=120) as client,
    ):
        reply = await client.post(f"{url}/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    evidence = reply.json()["ttscale"]
    assert evidence["strategy"] == "particle_filtering"
    assert "scored by prm" in evidence["explanation"]
    history = evidence["details"]["history"]
    assert 1 <= len(history) <= 2 and history[0]["scored"] == [0, 1, 2]
    assert all(0.0 < s < 1.0 for s in history[0]["scores"])  # the PRM's P(correct step)
    weights = [c["scores"]["weight"] for c in evidence["candidates"]]
    assert sum(weights) == pytest.approx(1.0)
    assert evidence["chosen"] == evidence["candidates"][weights.index(max(weights))]["index"]
    spent = evidence["budget"]["spent"]
    assert spent["verifier_tokens"] > 0 and spent["generated_tokens"] > 0
    assert reply.json()["usage"]["completion_tokens"] == spent["generated_tokens"]
    assert await engine.num_running() == 0
