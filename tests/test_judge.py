"""LLM-as-judge through the real engine: P("Yes") read from requested token logprobs."""

from __future__ import annotations

import math

from ttscale.engine.types import SamplingSpec
from ttscale.verifiers.judge import LLMJudge
from ttscale.verifiers.protocol import OutcomeVerifier, ProcessVerifier


async def test_judge_returns_a_probability_and_bills_its_tokens(engine):
    judge = LLMJudge(engine)
    assert isinstance(judge, OutcomeVerifier) and isinstance(judge, ProcessVerifier)
    verdict = await judge.score_solution("What is 2+2?", "2+2 = 4, so the answer is \\boxed{4}.")
    assert 0.0 <= verdict.score <= 1.0
    assert verdict.p_yes > 0.0 and verdict.p_no > 0.0  # asked for explicitly, never missing
    assert math.isclose(verdict.score, verdict.p_yes / (verdict.p_yes + verdict.p_no))
    assert verdict.usage.generated_tokens == 1
    assert verdict.usage.prompt_tokens > 20
    assert verdict.usage.total_tokens == (
        verdict.usage.prompt_tokens - verdict.usage.cached_prompt_tokens + 1
    )


async def test_judge_scores_match_the_engines_label_logprobs(engine):
    """The score is exactly softmax over the Yes/No token logprobs at the first position."""
    judge = LLMJudge(engine)
    yes_ids, no_ids = await judge._answer_token_ids()
    prompt = "Is the sky green? Answer with a single word, Yes or No."
    verdict = await judge._ask(prompt)
    ids = await engine.render_chat([{"role": "user", "content": prompt}])
    spec = SamplingSpec(temperature=0.0, max_tokens=1, logprob_token_ids=(*yes_ids, *no_ids))
    labels = (await engine.generate(ids, spec)).samples[0].label_logprobs[0]
    assert set(labels) == {*yes_ids, *no_ids}
    p_yes = sum(math.exp(labels[t]) for t in yes_ids)
    assert math.isclose(verdict.p_yes, p_yes, rel_tol=1e-6)


async def test_judge_scores_outcomes_and_steps(engine):
    judge = LLMJudge(engine)
    outcomes = await judge.score_outcomes("1+1?", ["It is 2.", "It is 3."])
    assert len(outcomes.scores) == 2 and all(0 <= s <= 1 for s in outcomes.scores)
    assert outcomes.usage.generated_tokens == 2
    steps = await judge.score_steps("1+1?", [["One plus one.", "Equals 2."], ["Equals 3."]])
    assert [len(s) for s in steps.scores] == [2, 1]
    assert steps.usage.generated_tokens == 3
