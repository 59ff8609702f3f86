"""Every strategy end to end through the real vLLM engine (tiny model, judge verifier):
caps hold and the usage adds up."""

from __future__ import annotations

import pytest

from ttscale.strategies.base import StrategyContext, Verifiers
from ttscale.strategies.budget import Budget, BudgetLimits
from ttscale.strategies.registry import discover
from ttscale.verifiers.judge import LLMJudge

QUESTION = "What is 6 times 7?"


async def make_context(engine, grader, limits: BudgetLimits) -> StrategyContext:
    judge = LLMJudge(engine)
    messages = [{"role": "user", "content": QUESTION}]
    return StrategyContext(
        engine=engine,
        verifiers=Verifiers(grader, {"judge": judge}, {"judge": judge}),
        budget=Budget(limits, policy_shape=engine.info.shape),
        messages=messages,
        prompt_ids=await engine.render_chat(messages),
        question=QUESTION,
    )


SAMPLING = {"temperature": 1.0, "max_tokens": 24, "seed": 3}
CASES = {
    "best_of_n": {"n": 4, "sampling": SAMPLING, "verifier": "judge"},
    "deepconf": {"n": 4, "warmup": 2, "window": 8, "sampling": SAMPLING},
    "self_consistency": {
        "n": 6,
        "sampling": SAMPLING,
        "weighting": "verifier",
        "verifier": "judge",
    },
    "inverse_entropy": {"n": 3, "mode": "sequential", "sampling": SAMPLING},
    "universal_self_consistency": {"n": 3, "sampling": SAMPLING},
    "multi_temperature": {
        "temperatures": [0.0, 0.7, 1.2],
        "samples_per_temperature": 2,
        "sampling": SAMPLING,
    },
    "particle_filtering": {
        "verifier": "judge",
        "particles": 2,
        "max_steps": 2,
        "step_max_tokens": 16,
        "sampling": SAMPLING,
    },
    "step_search": {
        "verifier": "judge",
        "beam_width": 2,
        "expansions": 2,
        "max_steps": 2,
        "step_max_tokens": 16,
        "refine_rounds": 1,
        "sampling": SAMPLING,
    },
}


NEED_A_REASONING_MODEL = {"budget_forcing"}
"""Strategies run through the real engine on the tiny reasoning model instead
(tests/test_reasoning_engine.py): they write a thought's close themselves."""


def test_every_registered_strategy_has_an_engine_case():
    assert set(discover()) == set(CASES) | NEED_A_REASONING_MODEL
    for name in NEED_A_REASONING_MODEL:
        assert discover()[name].params_model().needs_thought_closes()


@pytest.mark.parametrize("name", sorted(CASES))
async def test_strategy_runs_and_accounts_for_every_token(engine, grader, name):
    strategy = discover()[name]
    ctx = await make_context(engine, grader, BudgetLimits())
    result = await strategy.execute(ctx, strategy.parse_params(CASES[name]))
    usage = result.usage
    assert result.strategy == name
    assert result.candidates and result.stop_reason in ("completed", "early_stop")
    assert usage.samples_started == usage.samples_finished + usage.samples_aborted
    assert usage.generated_tokens > 0 and usage.policy_flops > 0 and usage.wall_s > 0
    assert usage.prompt_tokens >= len(ctx.prompt_ids)
    if name in ("best_of_n", "self_consistency", "multi_temperature", "universal_self_consistency"):
        assert usage.generated_tokens == sum(c.tokens for c in result.candidates) + (
            usage.aborted_tokens
        )
    if name in (
        "best_of_n",
        "self_consistency",
        "step_search",
        "particle_filtering",
        "universal_self_consistency",
    ):
        assert usage.verifier_tokens > 0 and usage.verifier_flops > 0
    assert await engine.num_running() == 0


@pytest.mark.parametrize("name", sorted(CASES))
async def test_generated_token_cap_holds(engine, grader, name):
    # below what each case needs: a step search's first depth alone asks 2 x 16 tokens
    cap = 10 if name in ("step_search", "particle_filtering") else 40
    strategy = discover()[name]
    ctx = await make_context(engine, grader, BudgetLimits(max_generated_tokens=cap))
    result = await strategy.execute(ctx, strategy.parse_params(CASES[name]))
    assert result.usage.generated_tokens <= cap
    assert result.stop_reason == "budget"
    assert await engine.num_running() == 0


async def test_verifier_token_cap_holds(engine, grader):
    strategy = discover()["best_of_n"]
    ctx = await make_context(engine, grader, BudgetLimits(max_verifier_tokens=50))
    result = await strategy.execute(ctx, strategy.parse_params(CASES["best_of_n"]))
    assert result.usage.verifier_tokens == 0  # four judgements cost more than 50 tokens
    assert "verifier budget exhausted" in result.explanation


async def test_wall_time_cap_aborts_long_samples(engine, grader):
    strategy = discover()["self_consistency"]
    ctx = await make_context(engine, grader, BudgetLimits(max_wall_s=1.0))
    params = {"n": 4, "sampling": {"max_tokens": 900, "seed": 1}}
    result = await strategy.execute(ctx, strategy.parse_params(params))
    assert result.stop_reason == "budget"
    assert result.usage.samples_aborted == 4
    assert result.usage.aborted_tokens == result.usage.generated_tokens > 0
    assert result.usage.wall_s < 5
    assert await engine.num_running() == 0


async def test_adaptive_self_consistency_on_the_engine(engine, grader):
    """Greedy samples all agree, so the adaptive run stops long before n; nothing else
    runs on the engine, so it draws samples together, three at a time: three samples
    could settle the vote, so a fourth waits for them."""
    strategy = discover()["self_consistency"]
    ctx = await make_context(engine, grader, BudgetLimits())
    params = {"n": 16, "adaptive": True, "sampling": {"temperature": 0.0, "max_tokens": 8}}
    result = await strategy.execute(ctx, strategy.parse_params(params))
    assert result.details["in_flight_limit"] == {"floor": 1, "ceiling": 4, "follows_load": True}
    assert result.details["most_in_flight"] == 3
    assert await engine.num_running() == 0
    answered = [c for c in result.candidates if c.answer is not None]
    if answered:  # the random model's greedy text ends with a number: votes are unanimous
        assert result.stop_reason == "early_stop"
        assert result.usage.samples_started < 16
    else:  # no answers, no votes: adaptive stopping has nothing to stop on
        assert result.usage.samples_started == 16
