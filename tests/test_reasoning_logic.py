"""Reasoning models, with a scripted engine: votes read the answer part, a thought cut
short votes only when asked to read its thinking, thinking budgets close thoughts so
that cut samples still answer, and thinking is billed and reported apart."""

from __future__ import annotations

import pytest

from ttscale.engine.types import SamplingSpec
from ttscale.strategies.deepconf import Trace
from ttscale.strategies.errors import InvalidRequest
from ttscale.strategies.self_consistency import SelfConsistencyParams, self_consistency
from ttscale.strategies.strategy_choice import StrategyChoice

from .support.fakes import THOUGHT_CLOSES, Scripted, ScriptedEngine
from .test_service import request, service
from .test_strategies_logic import context

SEEDED = SamplingSpec(seed=0, max_tokens=200)


def reasoning_engine(texts: list[str], **scripted) -> ScriptedEngine:
    """Sample k (seed k) writes texts[k]."""
    return ScriptedEngine(
        lambda p, spec, i: Scripted(texts[spec.seed % len(texts)], **scripted), reasoning=True
    )


async def test_a_draft_boxed_in_the_thoughts_is_not_the_vote_when_an_answer_part_exists(grader):
    thinks = f"Maybe \\boxed{{1}}? No, recheck.{THOUGHT_CLOSES}So \\boxed{{2}}"
    engine = reasoning_engine([thinks, thinks, f"Hm \\boxed{{1}}{THOUGHT_CLOSES}\\boxed{{1}}"])
    params = SelfConsistencyParams(n=3, sampling=SEEDED)
    result = await self_consistency(await context(engine, grader), params)
    assert result.answer == "2" and result.votes == {"2": 2.0, "1": 1.0}
    first = result.candidates[0]
    assert (first.answer, first.answer_source) == ("2", "answer")
    assert first.content == "So \\boxed{2}" and "\\boxed{1}" in first.reasoning
    assert result.content == "So \\boxed{2}" and "recheck" in result.reasoning


async def test_a_thought_cut_before_it_closed_votes_only_when_asked_to_read_its_thinking(grader):
    cut = "Let me think: the sum is \\boxed{7}, but I should check it again and again"
    answered = f"Short.{THOUGHT_CLOSES}\\boxed{{9}}"
    engine = reasoning_engine([cut, cut, answered])
    strict = SelfConsistencyParams(n=3, sampling=SEEDED)
    result = await self_consistency(await context(engine, grader), strict)
    assert [c.answer for c in result.candidates] == [None, None, "9"]
    assert result.answer == "9" and result.candidates[0].content == ""
    lenient = strict.model_copy(update={"answer_from_thinking": True})
    result = await self_consistency(await context(engine, grader), lenient)
    assert result.answer == "7"
    assert [c.answer_source for c in result.candidates] == ["thinking", "thinking", "answer"]


async def test_a_thinking_budget_closes_the_thought_so_a_long_thinker_still_votes(grader):
    long_thought = "I keep thinking " * 20  # 320 characters: no close of its own
    engine = reasoning_engine([long_thought], after_forced_close="\\boxed{4}")
    spec = SamplingSpec(seed=0, max_tokens=400, thinking_token_budget=50)
    result = await self_consistency(
        await context(engine, grader), SelfConsistencyParams(n=2, sampling=spec)
    )
    assert result.answer == "4"
    assert all(c.reasoning_tokens == 50 and c.content == "\\boxed{4}" for c in result.candidates)
    assert result.usage.reasoning_tokens == 100
    answer_tokens = len(THOUGHT_CLOSES) + len("\\boxed{4}")
    assert result.usage.generated_tokens == 2 * (50 + answer_tokens)


def test_confidence_and_entropy_read_the_thinking_trace():
    """DeepConf's paper sets its threshold on reasoning traces: a confident thought with
    an unsure answer keeps the thought's confidence."""
    from ttscale.engine.types import Sample

    thought, answer = [0.9] * 8, [0.1] * 4
    sample = Sample(
        0, "x" * 12, list(range(12)), "stop",
        token_confidences=thought + answer, token_entropies=[0.2] * 8 + [3.0] * 4,
        reasoning="x" * 7, content="x" * 4, reasoning_tokens=7, thinking_span=8,
    )  # fmt: skip
    trace = Trace.of(sample, "warmup", window=4)
    assert trace.confidence == pytest.approx(0.9)
    assert sample.mean_entropy == pytest.approx(0.2)
    plain = Sample(0, "x", [1, 2], "stop", token_entropies=[0.2, 3.0])
    assert plain.mean_entropy == pytest.approx(1.6)  # no thinking: the whole sample


async def test_a_thinking_budget_needs_a_reasoning_model_and_room_for_the_answer(grader):
    plain, _ = service(ScriptedEngine(lambda p, spec, i: Scripted("1")), grader)
    budgeted = SamplingSpec(thinking_token_budget=64, max_tokens=128)
    with pytest.raises(InvalidRequest, match="needs a reasoning model") as caught:
        await plain.prepare(request(sampling=budgeted))
    assert caught.value.param == "sampling.thinking_token_budget"

    thinking, _ = service(reasoning_engine(["1"]), grader)
    await thinking.prepare(request(sampling=budgeted))  # fits: 64 of 128 for thinking
    too_long = SamplingSpec(thinking_token_budget=128, max_tokens=128)
    with pytest.raises(InvalidRequest, match="no room for the answer") as caught:
        await thinking.prepare(request(sampling=too_long))
    assert caught.value.param == "sampling.thinking_token_budget"
    strategy = StrategyChoice(
        strategy="self_consistency",
        params={"sampling": {"thinking_budget": 300, "max_tokens": 256}},
    )
    with pytest.raises(InvalidRequest, match="no room for the answer") as caught:
        await thinking.prepare(request(choice=strategy))
    assert caught.value.param == "choice.params.sampling.thinking_token_budget"


CUT = "Let me think: the sum is \\boxed{7}, but I should check it again and again"


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("best_of_n", {"n": 2}),
        ("self_consistency", {"n": 2}),
        ("inverse_entropy", {"n": 2}),
        ("multi_temperature", {"temperatures": [0.5, 1.0], "samples_per_temperature": 1}),
        ("deepconf", {"n": 2, "warmup": 2}),
    ],
)
async def test_every_sampling_strategy_reads_a_cut_thought_only_when_asked(
    grader, strategy, params
):
    svc, _ = service(reasoning_engine([CUT]), grader)
    for lenient in (False, True):
        choice = StrategyChoice(
            strategy=strategy,
            params={**params, "answer_from_thinking": lenient, "sampling": {"seed": 0}},
        )
        result = await svc.complete(request(choice=choice))
        candidates = result.evidence["candidates"]
        expected = ("7", "thinking") if lenient else (None, None)
        assert {(c["answer"], c["answer_source"]) for c in candidates} == {expected}
        assert result.evidence["answer"] == expected[0]


async def test_particle_filtering_steps_through_the_thinking_and_answers_after_it(grader):
    """A boxed draft in a thinking step does not end the particle; the answer part does."""
    from ttscale.strategies.particle_filtering import (
        ParticleFilteringParams,
        particle_filtering,
    )

    from .test_particle_filtering import StepTableVerifier

    def steps(prompt, spec, index):
        seen = "".join(map(chr, prompt))
        if "Try" in seen:  # the second step closes the thought and answers
            return Scripted(f"{THOUGHT_CLOSES}\\boxed{{2}}")
        return Scripted("Try \\boxed{1}\n\n")

    engine = ScriptedEngine(steps, reasoning=True)
    verifier = StepTableVerifier({"Try": 0.6})
    ctx = await context(engine, grader, process={"prm": verifier})
    params = ParticleFilteringParams(particles=2, max_steps=4, verifier="prm", sampling=SEEDED)
    result = await particle_filtering(ctx, params)
    assert result.answer == "2"
    best = next(c for c in result.candidates if c.index == result.chosen)
    assert best.content == "\\boxed{2}" and "\\boxed{1}" in best.reasoning
    assert best.reasoning_tokens == len("Try \\boxed{1}\n\n")


async def test_a_thinking_decay_counts_the_samples_drawn_not_their_seed_numbers(grader):
    """multi_temperature numbers its samples by temperature slot (seeds far apart): the
    budget still shrinks sample by sample as they are drawn."""
    long_thought = "I keep thinking " * 20
    engine = reasoning_engine([long_thought], after_forced_close="\\boxed{4}")
    svc, _ = service(engine, grader)
    params = {"temperatures": [0.5, 1.0], "samples_per_temperature": 2, "first_round": 2,
              "thinking_decay": 0.5,
              "sampling": {"seed": 0, "max_tokens": 400, "thinking_budget": 64}}  # fmt: skip
    await svc.complete(request(choice=StrategyChoice(strategy="multi_temperature", params=params)))
    assert sorted(spec.thinking_token_budget for _, spec in engine.calls) == [8, 16, 32, 64]


# --- budget forcing (s1) -----------------------------------------------------------------


def second_thoughts(prompt, spec, index) -> Scripted:
    """Closes its thought quickly on 1; told to wait, it thinks again and settles on 2."""
    seen = "".join(map(chr, prompt))
    if THOUGHT_CLOSES in seen:  # the thought is closed: the answer
        return Scripted("\\boxed{2}" if "Wait" in seen else "\\boxed{1}")
    if "Wait" in seen:
        return Scripted(f"Actually two.{THOUGHT_CLOSES}")
    return Scripted(f"Quick: one.{THOUGHT_CLOSES}")


async def test_budget_forcing_reopens_a_closed_thought_with_the_cue_and_the_answer_changes(grader):
    from ttscale.strategies.budget_forcing import BudgetForcingParams, budget_forcing

    engine = ScriptedEngine(second_thoughts, reasoning=True)
    spec = SamplingSpec(seed=0, max_tokens=300)
    once = BudgetForcingParams(extensions=1, answer_tokens=50, sampling=spec)
    result = await budget_forcing(await context(engine, grader), once)
    chain = result.candidates[0]
    assert result.answer == "2" and chain.answer_source == "answer"
    assert chain.reasoning == "Quick: one.WaitActually two."
    thought = len("Quick: one.") + len("Actually two.")
    assert chain.reasoning_tokens == thought == result.usage.reasoning_tokens
    assert result.details["chains"] == [
        {"extensions": 1, "thinking_tokens": thought, "forced_close": False, "answered": True}
    ]
    # the cue is written into the prompt, not generated: the bill is the model's tokens
    answer = len("\\boxed{2}")
    assert result.usage.generated_tokens == thought + 2 + answer  # two closes generated
    never = once.model_copy(update={"extensions": 0})
    assert (await budget_forcing(await context(engine, grader), never)).answer == "1"


async def test_budget_forcing_closes_a_thought_at_its_cap_and_lets_the_model_answer(grader):
    from ttscale.strategies.budget_forcing import BudgetForcingParams, budget_forcing

    def rambles(prompt, spec, index):
        closed = THOUGHT_CLOSES in "".join(map(chr, prompt))
        return Scripted("\\boxed{5}" if closed else "and so on " * 40)

    engine = ScriptedEngine(rambles, reasoning=True)
    spec = SamplingSpec(seed=0, max_tokens=100, thinking_token_budget=60)
    params = BudgetForcingParams(n=3, answer_tokens=20, sampling=spec)
    assert params.thinking_cap() == 60
    result = await budget_forcing(await context(engine, grader), params)
    assert result.answer == "5" and result.votes == {"5": 3.0}
    assert all(c["forced_close"] and c["thinking_tokens"] == 60 for c in result.details["chains"])
    assert result.usage.generated_tokens == 3 * (60 + len("\\boxed{5}"))


async def test_budget_forcing_leaves_a_long_enough_thought_closed(grader):
    from ttscale.strategies.budget_forcing import BudgetForcingParams, budget_forcing

    engine = ScriptedEngine(second_thoughts, reasoning=True)
    params = BudgetForcingParams(
        extensions=3, min_thinking=5, answer_tokens=50, sampling=SamplingSpec(seed=0)
    )
    result = await budget_forcing(await context(engine, grader), params)
    assert result.answer == "1" and result.details["chains"][0]["extensions"] == 0


async def test_budget_forcing_needs_a_reasoning_model(grader):
    plain, _ = service(ScriptedEngine(lambda p, spec, i: Scripted("1")), grader)
    with pytest.raises(InvalidRequest, match="needs a reasoning model") as caught:
        await plain.prepare(request(choice=StrategyChoice(strategy="budget_forcing")))
    assert caught.value.param == "choice.strategy"
    thinking, _ = service(reasoning_engine(["1"]), grader)
    await thinking.prepare(request(choice=StrategyChoice(strategy="budget_forcing")))


async def test_a_thinking_budget_can_shrink_from_sample_to_sample(grader):
    """With a decay the samples a run draws first think longest, and those an adaptive
    run may stop before needing think less."""
    long_thought = "I keep thinking " * 20
    engine = reasoning_engine([long_thought], after_forced_close="\\boxed{4}")
    svc, _ = service(engine, grader)
    params = {"n": 4, "parallel": 1, "thinking_decay": 0.5,
              "sampling": {"seed": 0, "max_tokens": 400, "thinking_budget": 64}}  # fmt: skip
    result = await svc.complete(
        request(choice=StrategyChoice(strategy="self_consistency", params=params))
    )
    assert [spec.thinking_token_budget for _, spec in engine.calls] == [64, 32, 16, 8]
    thinking = [c["reasoning_tokens"] for c in result.evidence["candidates"]]
    assert thinking == [64, 32, 16, 8]
    spent = result.evidence["budget"]["spent"]
    assert spent["reasoning_tokens"] == sum(thinking)
    assert spent["answer_tokens"] == spent["generated_tokens"] - sum(thinking) > 0


async def test_both_spellings_of_the_thinking_budget_at_once_are_refused(grader):
    svc, _ = service(reasoning_engine(["1"]), grader)
    both = {"sampling": {"thinking_budget": 8, "thinking_token_budget": 16}}
    with pytest.raises(InvalidRequest, match="not both") as caught:
        await svc.prepare(request(choice=StrategyChoice(strategy="self_consistency", params=both)))
    assert caught.value.param == "choice.params.sampling"
