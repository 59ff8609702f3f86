"""Strategy rules pinned with a scripted engine: votes, weights, early exits, budgets."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import pytest

from ttscale.engine.protocol import EngineError
from ttscale.engine.types import ModelShape
from ttscale.strategies.base import StrategyContext, Verifiers
from ttscale.strategies.best_of_n import BestOfNParams, best_of_n
from ttscale.strategies.budget import Budget, BudgetLimits
from ttscale.strategies.flops import forward_flops
from ttscale.strategies.in_flight import EngineLoad
from ttscale.strategies.inverse_entropy import InverseEntropyParams, inverse_entropy
from ttscale.strategies.multi_temperature import MultiTemperatureParams, multi_temperature
from ttscale.strategies.registry import discover
from ttscale.strategies.self_consistency import SelfConsistencyParams, self_consistency
from ttscale.verifiers.protocol import OutcomeScores, StepScores, VerifierUsage

from .support.fakes import FakeVerifier, Scripted, ScriptedEngine

QUESTION = "What is x?"


class FakeOutcomeVerifier(FakeVerifier):
    """Scores a solution by a lookup on its text; costs 10 tokens per solution."""

    def __init__(self, score: Callable[[str], float]) -> None:
        self._score = score
        self.request_ids: list[str | None] = []

    async def estimate_outcome_tokens(self, question: str, solutions: Sequence[str]) -> int:
        return 10 * len(solutions)

    async def score_outcomes(
        self, question: str, solutions: Sequence[str], *, request_id=None
    ) -> OutcomeScores:
        self.request_ids.append(request_id)
        usage = VerifierUsage(prompt_tokens=9 * len(solutions), generated_tokens=len(solutions))
        return OutcomeScores([self._score(s) for s in solutions], usage)


class FakeProcessVerifier(FakeVerifier):
    def __init__(self, score: Callable[[str], float]) -> None:
        self._score = score

    async def estimate_step_tokens(self, question: str, solutions, *, last_only=False) -> int:
        return sum(len(s) for s in solutions)

    async def score_steps(
        self, question: str, solutions, *, last_only=False, request_id=None
    ) -> StepScores:
        usage = VerifierUsage(prompt_tokens=sum(len(s) for s in solutions))
        return StepScores([[self._score(step) for step in s] for s in solutions], usage)


def answers_engine(answers: Sequence[str], seconds: float = 0.0, **extra) -> ScriptedEngine:
    """Sample k (its seed, with sampling.seed=0) answers answers[k]."""

    def script(prompt, spec, index):
        k = spec.seed % len(answers)
        return Scripted(f"Work.\n\nSo \\boxed{{{answers[k]}}}", seconds, **extra)

    return ScriptedEngine(script)


async def context(
    engine, grader, limits=None, outcome=None, process=None, load=None
) -> StrategyContext:
    messages = [{"role": "user", "content": QUESTION}]
    return StrategyContext(
        engine=engine,
        verifiers=Verifiers(grader, outcome or {}, process or {}),
        budget=Budget(limits or BudgetLimits()),
        messages=messages,
        prompt_ids=await engine.render_chat(messages),
        question=QUESTION,
        load=load or EngineLoad(),
    )


SEEDED = {"temperature": 0.8, "max_tokens": 200, "seed": 0}


def test_every_strategy_module_is_registered():
    assert set(discover()) >= {
        "best_of_n",
        "self_consistency",
        "inverse_entropy",
        "multi_temperature",
    }


async def test_self_consistency_votes_by_math_equivalence(grader):
    engine = answers_engine(["\\frac{1}{2}", "3", "0.5", "3", "1/2"])
    params = SelfConsistencyParams(n=5, sampling=SEEDED)
    result = await self_consistency(await context(engine, grader), params)
    assert result.answer == "\\frac{1}{2}"
    assert result.votes == {"\\frac{1}{2}": 3.0, "3": 2.0}
    assert result.stop_reason == "completed"
    assert result.usage.samples_finished == 5
    assert result.usage.generated_tokens == sum(c.tokens for c in result.candidates)


async def test_self_consistency_tie_goes_to_the_answer_seen_first(grader):
    engine = answers_engine(["7", "8", "8", "7"])
    result = await self_consistency(
        await context(engine, grader), SelfConsistencyParams(n=4, sampling=SEEDED)
    )
    assert result.answer == "7"


async def test_adaptive_stops_when_the_leader_cannot_be_overtaken(grader):
    engine = answers_engine(["5"])
    params = SelfConsistencyParams(n=5, sampling=SEEDED, adaptive=True, parallel=1)
    result = await self_consistency(await context(engine, grader), params)
    # after 3 votes for 5 the 2 remaining samples cannot overturn it (Beta: 0.9375 < 0.95)
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_started == 3
    assert "cannot be overtaken" in result.explanation


async def test_an_adaptive_run_that_draws_every_sample_is_complete_not_stopped_early(grader):
    """After the n-th vote nothing is left to save: the stop rules do not claim it (the
    leader, two votes of four, could not be overtaken by the none remaining)."""
    engine = answers_engine(["1", "1", "2", "3"])
    params = SelfConsistencyParams(n=4, sampling=SEEDED, adaptive=True, parallel=1)
    result = await self_consistency(await context(engine, grader), params)
    assert result.usage.samples_started == 4
    assert result.stop_reason == "completed"
    assert "stopped early" not in result.explanation


async def test_adaptive_beta_rule_saves_samples(grader):
    engine = answers_engine(["5"])
    params = SelfConsistencyParams(
        n=32, sampling=SEEDED, adaptive=True, parallel=1, stopping="beta", confidence=0.95
    )
    result = await self_consistency(await context(engine, grader), params)
    # P(leader stays leader) after 4 unanimous votes = 1 - 0.5**5 = 0.969 >= 0.95
    assert result.usage.samples_started == 4
    assert "P(leader stays leader) = 0.969" in result.explanation


async def test_adaptive_default_is_the_predictive_rule_at_0_925(grader):
    """Three unanimous votes settle the leader of 16 with P = 0.947, enough for the
    default bar (a bar of 0.95 would wait for the fourth)."""
    engine = answers_engine(["5"])
    params = SelfConsistencyParams(n=16, sampling=SEEDED, adaptive=True, parallel=1)
    assert (params.stopping, params.confidence, params.min_samples) == ("predictive", 0.925, 3)
    result = await self_consistency(await context(engine, grader), params)
    assert result.usage.samples_started == 3
    assert "P(leader stays leader of all 16) = 0.947 >= 0.925" in result.explanation
    strict = params.model_copy(update={"confidence": 0.95})
    result = await self_consistency(await context(engine, grader), strict)
    assert result.usage.samples_started == 4
    assert "P(leader stays leader of all 16) = 0.980 >= 0.95" in result.explanation


async def test_predictive_rule_stops_once_the_lead_is_safe_for_the_n_samples(grader):
    """5,6,5,6 then 5s: after 8 samples (6 to 2, 8 to come) the leader of all 16 is
    settled with P = 0.956 by the predictive rule; the Beta rule, which asks about
    unlimited samples (0.910 there), waits until 8 to 2 after 10."""
    votes = ["5", "6", "5", "6"] + ["5"] * 12
    runs = {}
    for rule in ("predictive", "beta"):
        params = SelfConsistencyParams(
            n=16, sampling=SEEDED, adaptive=True, parallel=1, stopping=rule, confidence=0.95
        )
        runs[rule] = await self_consistency(await context(answers_engine(votes), grader), params)
    assert runs["predictive"].usage.samples_started == 8
    assert "P(leader stays leader of all 16) = 0.956" in runs["predictive"].explanation
    assert runs["beta"].usage.samples_started == 10
    assert runs["predictive"].answer == runs["beta"].answer == "5"


async def test_adaptive_aborts_samples_in_flight_and_bills_them(grader):
    """Asked to keep all eight in flight (no holding back), a run decided by its four
    fast samples aborts the four slow ones and bills what they made."""
    fast_then_slow = ScriptedEngine(
        lambda p, spec, i: Scripted("\\boxed{5}" + "." * 50, 0.01 if spec.seed < 4 else 5.0)
    )
    params = SelfConsistencyParams(n=8, sampling=SEEDED, adaptive=True, parallel=8, hold_back=False)
    result = await asyncio.wait_for(
        self_consistency(await context(fast_then_slow, grader), params), timeout=4
    )
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_aborted == 4
    assert result.usage.samples_started == 8
    assert await fast_then_slow.num_running() == 0
    finished = sum(c.tokens for c in result.candidates)
    assert result.usage.generated_tokens == finished + result.usage.aborted_tokens


async def test_adaptive_draws_one_at_a_time_on_a_busy_engine_so_stopping_saves(grader):
    """With all 16 in flight a decided vote could only cut samples nearly done. While
    other requests fill the engine, the default draws one at a time, so the unanimous
    run stops after 3 of 16 and starts no fourth."""
    engine = ScriptedEngine(lambda p, spec, i: Scripted("\\boxed{5}", seconds=0.01))
    busy = EngineLoad(fill=16, running=16)  # other requests' samples
    params = SelfConsistencyParams(n=16, sampling=SEEDED, adaptive=True)
    result = await self_consistency(await context(engine, grader, load=busy), params)
    assert result.details["in_flight_limit"] == {"floor": 1, "ceiling": 4, "follows_load": True}
    assert result.details["most_in_flight"] == 1
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_started == 3
    assert result.usage.samples_aborted == 0
    assert busy.running == 16
    fixed = await self_consistency(
        await context(engine, grader, load=busy), SelfConsistencyParams(n=16, sampling=SEEDED)
    )
    assert fixed.details["in_flight_limit"] == {"floor": 16, "ceiling": 16, "follows_load": False}
    assert fixed.details["most_in_flight"] == 16
    assert fixed.usage.samples_started == 16


async def test_adaptive_on_an_idle_engine_draws_together_the_samples_the_vote_needs(grader):
    """Nothing else runs, so samples run together for latency, up to four, but only
    those the vote surely needs: the first three (no vote stops before three), then more
    only while no answers of the ones in flight could settle it. A unanimous run takes
    three samples in one sample-time and starts no fourth to abort."""
    engine = ScriptedEngine(lambda p, spec, i: Scripted("\\boxed{5}", seconds=0.01))
    params = SelfConsistencyParams(n=16, sampling=SEEDED, adaptive=True)
    result = await self_consistency(await context(engine, grader), params)
    assert result.details["most_in_flight"] == 3
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_started == 3
    assert result.usage.samples_aborted == 0
    pinned = params.model_copy(update={"parallel": 1})
    result = await self_consistency(await context(engine, grader), pinned)
    assert result.details["in_flight_limit"]["follows_load"] is False
    assert result.details["most_in_flight"] == 1


async def test_a_split_vote_lets_an_idle_adaptive_run_draw_four_at_a_time(grader):
    """The first two answers differ (5 and 7): three more samples cannot settle the vote
    whatever they say, so a fourth starts beside them. Held back so, a stop never finds
    a sample in flight: any that could be was not started."""

    def script(prompt, spec, index) -> Scripted:
        answer, seconds = {0: ("5", 0.01), 1: ("7", 0.02)}.get(spec.seed, ("5", 0.1))
        return Scripted(f"\\boxed{{{answer}}}", seconds=seconds)

    params = SelfConsistencyParams(n=16, sampling=SEEDED, adaptive=True)
    result = await self_consistency(await context(ScriptedEngine(script), grader), params)
    assert result.details["most_in_flight"] == 4
    assert result.answer == "5"
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_aborted == 0  # the stop found nothing in flight


async def test_a_burst_of_adaptive_requests_shares_the_engines_fill(grader):
    """Each request counts the others' samples the moment they start, not once the
    engine has them: of six requests arriving together on an engine that is busy at
    four samples, the first takes the four and the others one each (not four each)."""
    engine = answers_engine(["5"], seconds=0.5)
    load = EngineLoad(fill=4)
    params = SelfConsistencyParams(n=16, sampling=SEEDED, adaptive=True, hold_back=False)
    contexts = [await context(engine, grader, load=load) for _ in range(6)]
    runs = [asyncio.ensure_future(self_consistency(c, params)) for c in contexts]
    await asyncio.sleep(0.2)
    assert load.running == await engine.num_running() == 4 + 5
    results = await asyncio.gather(*runs)
    assert results[0].details["most_in_flight"] == 4
    assert all(r.answer == "5" for r in results)
    assert load.running == await engine.num_running() == 0


def _unanswered(ending: str) -> ScriptedEngine:
    """Samples without an answer (no vote ever stops the run): quick, or slow enough to
    outlast the run, or the sixth fails in the engine."""

    def script(prompt, spec, index) -> Scripted:
        if ending == "engine error" and spec.seed == 5:
            raise RuntimeError("the engine lost this sample")
        return Scripted("no answer yet", seconds=5.0 if ending in SLOW_ENDINGS else 0.05)

    return ScriptedEngine(script)


SLOW_ENDINGS = ("wall time", "cancelled")


@pytest.mark.parametrize("ending", ["budget", "wall time", "engine error", "cancelled"])
async def test_the_services_load_count_returns_to_zero_however_a_run_ends(grader, ending):
    """Samples count as load from their start until they settle or are aborted; a run
    that ends on its budget, an engine failure or a cancellation leaves none counted
    (a leak would hold every later adaptive request at one sample in flight)."""
    engine = _unanswered(ending)
    load = EngineLoad()
    limits = {
        "budget": BudgetLimits(max_samples=3),
        "wall time": BudgetLimits(max_wall_s=0.3),
    }.get(ending)
    ctx = await context(engine, grader, limits, load=load)
    run = asyncio.ensure_future(
        self_consistency(ctx, SelfConsistencyParams(n=16, sampling=SEEDED, adaptive=True))
    )
    if ending == "cancelled":
        await asyncio.sleep(0.2)
        run.cancel()
    results = await asyncio.gather(run, return_exceptions=True)
    assert load.running == await engine.num_running() == 0
    if ending == "budget":  # the fourth sample did not fit: three in flight at most
        assert results[0].stop_reason == "budget"
        assert results[0].details["most_in_flight"] == 3
    elif ending == "wall time":
        assert results[0].stop_reason == "budget" and results[0].usage.samples_aborted > 0
    elif ending == "engine error":
        assert isinstance(results[0], EngineError)
    else:
        assert isinstance(results[0], asyncio.CancelledError)


async def test_verifier_weighting_can_overturn_the_majority(grader):
    engine = answers_engine(["1", "1", "2"])
    verifier = FakeOutcomeVerifier(lambda text: 0.9 if "{2}" in text else 0.2)
    params = SelfConsistencyParams(n=3, sampling=SEEDED, weighting="verifier", verifier="orm")
    result = await self_consistency(
        await context(engine, grader, outcome={"orm": verifier}), params
    )
    assert result.answer == "2"
    assert result.votes == {"1": 0.4, "2": 0.9}
    assert result.usage.verifier_tokens == 30


async def test_pessimistic_weighting(grader):
    engine = answers_engine(["1", "1", "1", "2"])
    verifier = FakeOutcomeVerifier(lambda text: 0.8 if "{2}" in text else 0.7)
    params = SelfConsistencyParams(
        n=4, sampling=SEEDED, weighting="pessimistic", verifier="orm", alpha=0.5
    )
    result = await self_consistency(
        await context(engine, grader, outcome={"orm": verifier}), params
    )
    assert result.answer == "1"
    assert math.isclose(result.votes["1"], 0.7 - 0.5 * math.log(4) / 4, rel_tol=1e-5)


async def test_weighted_mode_falls_back_when_the_verifier_budget_is_too_small(grader):
    engine = answers_engine(["1", "1", "2"])
    verifier = FakeOutcomeVerifier(lambda text: 0.9 if "{2}" in text else 0.2)
    params = SelfConsistencyParams(n=3, sampling=SEEDED, weighting="verifier", verifier="orm")
    limits = BudgetLimits(max_verifier_tokens=29)
    ctx = await context(engine, grader, limits, outcome={"orm": verifier})
    result = await self_consistency(ctx, params)
    assert result.answer == "1"
    assert "verifier budget exhausted" in result.explanation
    assert result.usage.verifier_tokens == 0


def test_invalid_parameter_combinations_are_refused():
    with pytest.raises(ValueError, match="needs a verifier"):
        SelfConsistencyParams(weighting="verifier")
    with pytest.raises(ValueError, match="adaptive"):
        SelfConsistencyParams(adaptive=True, weighting="pessimistic", verifier="orm")
    with pytest.raises(ValueError):
        SelfConsistencyParams(n=0)
    with pytest.raises(ValueError):
        MultiTemperatureParams(temperatures=[0.5, 0.5])


async def test_token_cap_holds_in_the_middle_of_a_batch(grader):
    engine = ScriptedEngine(lambda p, spec, i: Scripted("x" * 100))
    params = SelfConsistencyParams(n=5, sampling={**SEEDED, "max_tokens": 100})
    result = await self_consistency(
        await context(engine, grader, BudgetLimits(max_generated_tokens=250)), params
    )
    assert result.stop_reason == "budget"
    assert result.usage.generated_tokens == 250
    assert sorted(c.tokens for c in result.candidates) == [50, 100, 100]
    assert [c.finish_reason for c in result.candidates].count("length") == 1


async def test_sample_cap(grader):
    engine = answers_engine(["4"])
    result = await self_consistency(
        await context(engine, grader, BudgetLimits(max_samples=3)),
        SelfConsistencyParams(n=10, sampling=SEEDED),
    )
    assert result.stop_reason == "budget" and result.usage.samples_started == 3


async def test_wall_time_cap_aborts_and_bills_running_samples(grader):
    engine = ScriptedEngine(lambda p, spec, i: Scripted("y" * 400, seconds=5.0))
    ctx = await context(engine, grader, BudgetLimits(max_wall_s=0.3))
    result = await asyncio.wait_for(
        self_consistency(ctx, SelfConsistencyParams(n=4, sampling={**SEEDED, "max_tokens": 400})),
        timeout=3,
    )
    assert result.stop_reason == "budget"
    assert result.usage.samples_aborted == 4
    assert 0 < result.usage.aborted_tokens == result.usage.generated_tokens < 4 * 400
    assert await engine.num_running() == 0


async def test_best_of_n_picks_the_highest_verifier_score(grader):
    engine = answers_engine(["1", "2", "3"])
    verifier = FakeOutcomeVerifier(lambda text: 0.9 if "{2}" in text else 0.1)
    ctx = await context(engine, grader, outcome={"orm": verifier})
    result = await best_of_n(ctx, BestOfNParams(n=3, sampling=SEEDED, verifier="orm"))
    assert result.answer == "2" and result.chosen == 1
    assert "highest orm score" in result.explanation


async def test_verifier_flops_are_estimated_with_the_verifiers_own_model(grader):
    """A reward model seven times the policy's size costs seven times its FLOPs per token;
    a judge that scores with the policy's model (shape None) costs the policy's."""
    policy = ModelShape(10**8, 4, 256, 4, 4, 64, 1000)
    reward_model = ModelShape(7 * 10**8, 4, 256, 4, 4, 64, 1000)
    spent = {}
    for name, shape in (("orm", reward_model), ("judge", None)):
        verifier = FakeOutcomeVerifier(lambda text: 0.5)
        verifier.shape = shape
        ctx = await context(answers_engine(["1", "2"]), grader, outcome={name: verifier})
        ctx.budget = Budget(BudgetLimits(), policy_shape=policy)
        result = await best_of_n(ctx, BestOfNParams(n=2, sampling=SEEDED, verifier=name))
        usage = result.usage
        computed = usage.verifier_tokens
        assert computed == 20  # the fake bills 9 prompt + 1 generated tokens a solution
        spent[name] = usage.verifier_flops
        expected = forward_flops(shape or policy, usage.verifier_cached_tokens, computed)
        assert usage.verifier_flops == pytest.approx(expected)
    assert spent["orm"] > 6 * spent["judge"]


async def test_best_of_n_process_verifier_uses_the_minimum_step(grader):
    texts = ["good\n\nbad\n\n\\boxed{1}", "fine\n\nfine\n\n\\boxed{2}"]
    engine = ScriptedEngine(lambda p, spec, i: Scripted(texts[spec.seed]))
    step_score = {"good": 0.99, "bad": 0.3, "fine": 0.6}
    verifier = FakeProcessVerifier(lambda step: step_score.get(step, 0.5))
    ctx = await context(engine, grader, process={"prm": verifier})
    params = BestOfNParams(n=2, sampling=SEEDED, verifier="prm", verifier_kind="process")
    result = await best_of_n(ctx, params)
    assert result.answer == "2"
    assert result.candidates[0].scores["prm_steps"] == [0.99, 0.3, 0.5]
    by_mean = await best_of_n(
        await context(engine, grader, process={"prm": verifier}),
        params.model_copy(update={"aggregation": "mean"}),
    )
    assert by_mean.answer == "1"  # means: 0.597 vs 0.567


async def test_best_of_n_without_verifier_uses_mean_logprob_and_says_so(grader):
    logprobs = [-2.0, -0.1, -1.0]
    engine = ScriptedEngine(
        lambda p, spec, i: Scripted(f"\\boxed{{{spec.seed}}}", logprob=logprobs[spec.seed])
    )
    result = await best_of_n(await context(engine, grader), BestOfNParams(n=3, sampling=SEEDED))
    assert result.answer == "1"
    assert "no verifier configured" in result.explanation


async def test_inverse_entropy_weights_confident_chains(grader):
    entropies = [0.1, 0.1, 2.0, 2.0, 2.0]
    answers = ["A", "A", "B", "B", "B"]
    engine = ScriptedEngine(
        lambda p, spec, i: Scripted(
            f"\\boxed{{{answers[spec.seed]}}}", entropy=entropies[spec.seed]
        )
    )
    result = await inverse_entropy(
        await context(engine, grader), InverseEntropyParams(n=5, sampling=SEEDED)
    )
    assert result.answer == "A"
    assert math.isclose(result.votes["A"], 2 / (0.1 + 1e-6), rel_tol=1e-6)
    assert math.isclose(result.votes["B"], 3 / (2.0 + 1e-6), rel_tol=1e-6)
    assert all(spec.logprobs == 20 for _, spec in engine.calls)


async def test_sequential_chains_see_the_previous_attempt(grader):
    engine = ScriptedEngine(lambda p, spec, i: Scripted(f"attempt-{spec.seed} \\boxed{{7}}"))
    params = InverseEntropyParams(n=3, mode="sequential", sampling=SEEDED)
    result = await inverse_entropy(await context(engine, grader), params)
    prompts = ["".join(map(chr, prompt)) for prompt, _ in engine.calls]
    assert "attempt-" not in prompts[0]
    assert "attempt-0" in prompts[1] and "attempt-1" in prompts[2]
    assert "Check the previous attempt" in prompts[2]
    assert result.answer == "7" and len(result.candidates) == 3
    assert all(spec.max_tokens == 200 for _, spec in engine.calls)  # matched per-chain budget


async def test_multi_temperature_exits_early_when_all_temperatures_agree(grader):
    engine = ScriptedEngine(lambda p, spec, i: Scripted("\\boxed{9}"))
    params = MultiTemperatureParams(
        temperatures=[0.0, 0.7, 1.2], samples_per_temperature=4, first_round=2, sampling=SEEDED
    )
    result = await multi_temperature(await context(engine, grader), params)
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_started == 1 + 2 + 2  # T=0 draws once
    assert result.answer == "9"


async def test_multi_temperature_two_stage_vote(grader):
    def script(prompt, spec, index):
        if spec.temperature == 0.0:
            return Scripted("\\boxed{1}")
        if spec.temperature == 0.6:
            return Scripted("\\boxed{2}" if spec.seed % 3 else "\\boxed{1}")
        return Scripted("\\boxed{2}" if spec.seed % 2 else "\\boxed{3}")

    engine = ScriptedEngine(script)
    params = MultiTemperatureParams(
        temperatures=[0.0, 0.6, 1.0], samples_per_temperature=4, first_round=2, sampling=SEEDED
    )
    result = await multi_temperature(await context(engine, grader), params)
    assert result.stop_reason == "completed"
    assert result.usage.samples_started == 1 + 4 + 4
    per_t = result.details["per_temperature"]
    assert per_t["0.0"]["winner_answer"] == "1"
    assert per_t["0.6"]["winner_answer"] == "2" and per_t["0.6"]["share"] == 0.75
    assert per_t["1.0"]["winner_answer"] == "3"  # 2 vs 2: first seen wins (seed 100000 -> 3)
    assert result.votes == {"1": 1.0, "2": 1.0, "3": 1.0}
    # one ballot per temperature: a three-way tie, broken by the larger within-temperature
    # share (T=0: 1.0, T=0.6: 0.75, T=1.0: 0.5)
    assert result.answer == "1"


async def test_concurrent_requests_keep_their_own_budgets(grader):
    engine = answers_engine(["5"], seconds=0.05)
    small = await context(engine, grader, BudgetLimits(max_samples=2))
    large = await context(engine, grader, BudgetLimits(max_samples=6))
    first, second = await asyncio.gather(
        self_consistency(small, SelfConsistencyParams(n=6, sampling=SEEDED)),
        self_consistency(large, SelfConsistencyParams(n=6, sampling=SEEDED)),
    )
    assert first.usage.samples_started == 2 and first.stop_reason == "budget"
    assert second.usage.samples_started == 6 and second.stop_reason == "completed"


def _depth(prompt: list[int]) -> int:
    return "".join(map(chr, prompt)).count("\n\n")


def step_engine(final_depth: int = 3) -> ScriptedEngine:
    """Step k of a beam is `d{depth}c{choice}`; the last depth writes a boxed answer.
    A rewrite request (its prompt asks for a corrected step) answers `better`."""

    def script(prompt, spec, index):
        text = "".join(map(chr, prompt))
        if "Rewritten step:" in text:
            return Scripted("The step is wrong.\nRewritten step: better")
        depth = _depth(prompt)
        choice = spec.seed % 4
        if depth + 1 >= final_depth:
            return Scripted(f"d{depth}c{choice} \\boxed{{{choice}}}")
        return Scripted(f"d{depth}c{choice}\n\n")

    return ScriptedEngine(script)


def step_verifier(table: dict[str, float], default: float = 0.5) -> FakeProcessVerifier:
    def score(step: str) -> float:
        return next((v for k, v in table.items() if step.startswith(k)), default)

    return FakeProcessVerifier(score)


async def test_step_search_keeps_the_best_steps_and_picks_the_highest_minimum(grader):
    from ttscale.strategies.step_search import StepSearchParams, step_search

    engine = step_engine()
    verifier = step_verifier({"d0c2": 0.95, "d0c1": 0.92, "d1c3": 0.97, "d2c0": 0.99, "d2c1": 0.6})
    ctx = await context(engine, grader, process={"prm": verifier})
    params = StepSearchParams(
        verifier="prm", beam_width=2, expansions=4, max_steps=5, refine=False, sampling=SEEDED
    )
    result = await step_search(ctx, params)
    assert result.answer == "0"
    assert result.text.startswith("d0c2\n\nd1c3\n\nd2c0")
    assert result.candidates[result.chosen].scores["min_step"] == 0.95
    assert result.details["depth"] == 3
    # every expansion continues from the original prompt plus its beam's tokens
    root = ctx.prompt_ids
    assert all(prompt[: len(root)] == root for prompt, _ in engine.calls)
    assert all(
        spec.stop == ("\n\n",) and spec.include_stop_str_in_output for _, spec in engine.calls
    )


async def test_step_search_submits_every_live_beams_expansions_together(grader):
    """All beams of a depth are sampled in one batch (the engine sees beam_width x
    expansions samples in flight at once), and the evidence reports the prefix-cache
    hit rate of the request's prompts."""
    from ttscale.strategies.step_search import StepSearchParams, step_search

    steps = step_engine()._script
    in_flight: list[int] = []

    def slow_step(prompt, spec, index):
        in_flight.append(engine._running)  # samples already running as this one starts
        return Scripted(steps(prompt, spec, index).text, seconds=0.05)

    engine = ScriptedEngine(slow_step)
    ctx = await context(engine, grader, process={"prm": step_verifier({})})
    params = StepSearchParams(
        verifier="prm", beam_width=2, expansions=4, max_steps=3, refine=False, sampling=SEEDED
    )
    result = await step_search(ctx, params)
    assert result.details["depth"] == 3
    assert max(in_flight) + 1 == params.beam_width * params.expansions
    assert result.details["prefix_cache_hit_rate"] == 0.0  # the fake engine caches nothing


async def test_step_refinement_is_accepted_only_if_the_score_rises(grader):
    from ttscale.strategies.step_search import StepSearchParams, step_search

    params = StepSearchParams(
        verifier="prm", beam_width=1, expansions=2, max_steps=1, refine_rounds=3, sampling=SEEDED
    )
    better = step_verifier({"better": 0.95}, default=0.5)
    accepted = await step_search(
        await context(step_engine(final_depth=1), grader, process={"prm": better}), params
    )
    assert accepted.text == "better"
    assert accepted.details["refinements"] == 1
    assert accepted.candidates[accepted.chosen].scores["steps"] == [0.95]

    worse = step_verifier({"better": 0.2}, default=0.5)
    rejected = await step_search(
        await context(step_engine(final_depth=1), grader, process={"prm": worse}), params
    )
    assert rejected.text.startswith("d0c")
    assert rejected.details["refinements"] == 3  # three rounds tried, none kept
    assert rejected.candidates[rejected.chosen].scores["steps"] == [0.5]


async def test_step_search_reports_each_depths_beams_as_tree_nodes(grader):
    """The `depth` event names every new beam with its parent, score and whether it
    survived the cut to beam_width: what the browser view draws as a tree."""
    from ttscale.strategies.step_search import StepSearchParams, step_search

    events: list[dict] = []

    async def progress(event: dict) -> None:
        events.append(event)

    verifier = step_verifier({"d0c2": 0.95, "d0c1": 0.92, "d1c3": 0.97, "d2c0": 0.99})
    ctx = await context(step_engine(), grader, process={"prm": verifier})
    ctx.progress = progress
    params = StepSearchParams(
        verifier="prm", beam_width=2, expansions=4, max_steps=5, refine=False, sampling=SEEDED
    )
    await step_search(ctx, params)
    depths = [e for e in events if e["event"] == "depth"]
    assert [e["depth"] for e in depths] == [1, 2, 3]
    first, second = depths[0]["nodes"], depths[1]["nodes"]
    assert len(first) == 4 and {n["parent"] for n in first} == {0}
    assert sorted(n["score"] for n in first if n["kept"]) == [0.92, 0.95]
    assert sum(not n["kept"] for n in first) == 2
    kept_ids = {n["id"] for n in first if n["kept"]}
    assert len(second) == 8 and {n["parent"] for n in second} == kept_ids
    ids = [n["id"] for d in depths for n in d["nodes"]]
    assert len(ids) == len(set(ids)) and 0 not in ids  # 0 is the empty root


async def test_an_early_stop_reports_the_samples_it_aborted(grader):
    """Samples cut by a stop rule are announced (`aborted`, with their tokens), so a
    client watching the stream sees them end; finished ones come with their entropy and
    the request's FLOPs so far."""
    fast_then_slow = ScriptedEngine(
        lambda p, spec, i: Scripted("\\boxed{5}" + "." * 50, 0.01 if spec.seed < 4 else 5.0)
    )
    events: list[dict] = []

    async def progress(event: dict) -> None:
        events.append(event)

    ctx = await context(fast_then_slow, grader)
    ctx.budget = Budget(BudgetLimits(), policy_shape=ModelShape(10**8, 4, 256, 4, 4, 64, 1000))
    ctx.progress = progress
    params = SelfConsistencyParams(n=8, sampling=SEEDED, adaptive=True, parallel=8, hold_back=False)
    result = await asyncio.wait_for(self_consistency(ctx, params), timeout=4)
    aborted = [e for e in events if e["event"] == "aborted"]
    assert len(aborted) == 1
    assert sorted(aborted[0]["indices"]) == [4, 5, 6, 7]
    assert sum(aborted[0]["tokens"]) == result.usage.aborted_tokens
    samples = [e for e in events if e["event"] == "sample"]
    assert all("mean_entropy" in e for e in samples)
    flops = [e["total_flops"] for e in samples]
    assert flops == sorted(flops) and 0 < flops[0] < flops[-1]
