"""Universal self-consistency: the selector's pick, its fallbacks, its billing as verifier
tokens, its budgets and the context, on the scripted engine; one run through the real
engine (slow lane)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ttscale.strategies.base import Verifiers
from ttscale.strategies.budget import BudgetLimits
from ttscale.strategies.errors import InvalidRequest
from ttscale.strategies.registry import discover
from ttscale.strategies.selection_prompt import (
    SELECTOR_PROMPT,
    check_template,
    equal_share,
    number_responses,
    read_choice,
)
from ttscale.strategies.service import Service
from ttscale.strategies.strategy_choice import StrategyChoice
from ttscale.strategies.universal_self_consistency import (
    UniversalSelfConsistencyParams,
    universal_self_consistency,
)

from .support.fakes import THOUGHT_CLOSES, Scripted, ScriptedEngine
from .support.servers import wait_until_idle
from .test_service import MESSAGES, choose, request
from .test_strategies_engine import make_context
from .test_strategies_logic import QUESTION, context
from .test_structured_answers import NoMathGrader

RESPONSES = [
    "Paris is the capital of France.",
    "The capital of France is Paris.",
    "It is Lyon.",
]
SAMPLING = {"temperature": 0.8, "max_tokens": 200, "seed": 0}
REPLY_TOKENS = 64
"""The selection's reply tokens in these tests: a scripted token is a character."""
SELECTOR_MARK = "most consistent response is Response X"


def is_selection(prompt: list[int]) -> bool:
    return SELECTOR_MARK in "".join(chr(t) for t in prompt)


def usc_engine(
    reply: str,
    responses: list[str] = RESPONSES,
    *,
    reply_seconds: float = 0.0,
    max_model_len: int = 4096,
    reasoning: bool = False,
) -> ScriptedEngine:
    """Sample k (its seed, with seed 0) writes responses[k]; the selection replies `reply`."""

    def script(prompt: list[int], spec, index: int) -> Scripted:
        if is_selection(prompt):
            return Scripted(reply, seconds=reply_seconds)
        return Scripted(responses[spec.seed % len(responses)])

    return ScriptedEngine(script, max_model_len=max_model_len, reasoning=reasoning)


def selector_calls(engine: ScriptedEngine) -> list[tuple[str, Any]]:
    return [("".join(chr(t) for t in p), spec) for p, spec in engine.calls if is_selection(p)]


async def run(engine: ScriptedEngine, limits: BudgetLimits | None = None, **params: Any):
    params = {"n": 3, "sampling": SAMPLING, "selector_max_tokens": REPLY_TOKENS, **params}
    ctx = await context(engine, NoMathGrader(), limits)
    return await universal_self_consistency(ctx, UniversalSelfConsistencyParams(**params))


# --- the pick ---------------------------------------------------------------------------


async def test_the_selectors_pick_is_returned():
    engine = usc_engine("The most consistent response is Response 2.")
    result = await run(engine)
    assert result.strategy == "universal_self_consistency"
    assert result.chosen == 1 and result.text == RESPONSES[1]
    assert [c.text for c in result.candidates] == RESPONSES
    selection = result.details["selection"]
    assert selection["response"] == 2 and selection["fallback"] is None
    assert selection["text"] == "The most consistent response is Response 2."
    assert selection["responses"] == [0, 1, 2]
    assert "Response 2 of 3" in result.explanation
    assert result.stop_reason == "completed" and result.votes == {}
    ((prompt, spec),) = selector_calls(engine)
    assert QUESTION in prompt and number_responses(RESPONSES) in prompt
    assert spec.temperature == 0.0 and spec.max_tokens == REPLY_TOKENS


async def test_the_first_response_number_in_range_is_the_pick():
    result = await run(usc_engine("Response 9 is not there; so Response 3, then Response 1."))
    assert result.chosen == 2
    assert result.details["selection"]["named"] == [9, 3, 1]


@pytest.mark.parametrize(
    "reply", ["I cannot decide.", "The most consistent response is Response X"]
)
async def test_an_unparseable_selection_falls_back_to_the_first_sample_and_says_so(reply):
    result = await run(usc_engine(reply))
    assert result.chosen == 0 and result.text == RESPONSES[0]
    assert result.details["selection"]["fallback"] == "no_response"
    assert result.details["selection"]["response"] is None
    assert result.details["selection"]["text"] == reply
    assert "named no response" in result.explanation
    assert "fell back to the first sample" in result.explanation
    assert result.stop_reason == "completed"


@pytest.mark.parametrize("reply", ["The most consistent response is Response 7.", "Response 0"])
async def test_an_out_of_range_selection_falls_back_to_the_first_sample(reply):
    result = await run(usc_engine(reply))
    assert result.chosen == 0
    assert result.details["selection"]["fallback"] == "out_of_range"
    assert "not one of 1..3" in result.explanation
    assert "fell back to the first sample" in result.explanation


async def test_one_sample_needs_no_selection():
    engine = usc_engine("Response 1")
    result = await run(engine, n=1)
    assert result.chosen == 0 and selector_calls(engine) == []
    assert result.usage.verifier_tokens == 0


# --- billing and budgets ------------------------------------------------------------------


async def test_the_selection_is_billed_as_verifier_tokens_and_the_samples_as_policy_tokens():
    reply = "The most consistent response is Response 1"
    engine = usc_engine(reply)
    result = await run(engine, selector_max_tokens=16)
    ((prompt, _),) = selector_calls(engine)
    usage = result.usage
    assert usage.generated_tokens == sum(len(r) for r in RESPONSES)  # the three samples only
    assert usage.samples_started == usage.samples_finished == 3
    assert usage.prompt_tokens == 3 * len(QUESTION)
    assert usage.verifier_prompt_tokens == len(prompt)
    assert usage.verifier_generated_tokens == 16  # the reply, cut at selector_max_tokens
    assert usage.verifier_tokens == len(prompt) + 16
    assert usage.verifier_flops == 0.0 and usage.policy_flops == 0.0  # no model shape
    assert result.details["selection"]["finish_reason"] == "length"
    assert result.chosen == 0 and result.details["selection"]["fallback"] == "no_response"


async def test_the_evidence_budget_shows_the_selections_verifier_tokens():
    engine = usc_engine("The most consistent response is Response 3")
    svc = Service(engine, Verifiers(NoMathGrader()), discover())  # type: ignore[arg-type]
    sampling = {"seed": 0, "max_tokens": 64}
    choice = choose("universal_self_consistency", n=3, selector_max_tokens=64, sampling=sampling)
    result = await svc.complete(request(model="scripted", choice=choice))
    evidence = result.evidence
    spent = evidence["budget"]["spent"]
    assert result.choices[0].text == RESPONSES[2] and evidence["chosen"] == 2
    assert spent["verifier_tokens"] == spent["verifier_prompt_tokens"] + len(
        "The most consistent response is Response 3"
    )
    assert spent["verifier_tokens"] > 0
    assert spent["generated_tokens"] == sum(len(r) for r in RESPONSES)
    assert evidence["details"]["selection"]["response"] == 3


async def test_a_verifier_budget_too_small_for_the_selection_picks_the_first_sample():
    engine = usc_engine("The most consistent response is Response 2")
    result = await run(engine, BudgetLimits(max_verifier_tokens=20))
    assert selector_calls(engine) == []  # refused before it started
    assert result.chosen == 0 and result.stop_reason == "budget"
    assert "budget" in result.explanation and "first sample" in result.explanation
    assert result.details["selection"]["fallback"] == "budget"
    assert result.usage.verifier_tokens == 0
    assert result.usage.samples_finished == 3


async def test_a_verifier_budget_that_pays_for_the_selection_is_kept():
    probe = usc_engine("The most consistent response is Response 2")
    await run(probe)
    ((prompt, _),) = selector_calls(probe)
    exact = len(prompt) + REPLY_TOKENS  # the prompt and every token the reply may take
    result = await run(
        usc_engine("The most consistent response is Response 2"),
        BudgetLimits(max_verifier_tokens=exact),
    )
    assert result.chosen == 1 and result.usage.verifier_tokens <= exact
    short = await run(usc_engine("Response 2"), BudgetLimits(max_verifier_tokens=exact - 1))
    assert short.details["selection"]["fallback"] == "budget"


async def test_the_wall_time_cap_aborts_the_selection_and_bills_what_it_generated():
    engine = usc_engine("Response 2 " * 20, reply_seconds=5.0)
    result = await run(engine, BudgetLimits(max_wall_s=0.5), selector_max_tokens=200)
    assert result.chosen == 0 and result.stop_reason == "budget"
    assert result.details["selection"]["fallback"] == "wall_time"
    assert result.details["selection"]["finish_reason"] == "abort"
    assert result.usage.verifier_prompt_tokens > 0
    assert 0 < result.usage.verifier_generated_tokens < 200
    assert result.usage.wall_s < 2.0
    assert await engine.num_running() == 0


async def test_cancelling_during_the_selection_aborts_and_bills_it():
    engine = usc_engine("Response 2 " * 20, reply_seconds=5.0)
    ctx = await context(engine, NoMathGrader())
    params = UniversalSelfConsistencyParams(n=3, sampling=SAMPLING, selector_max_tokens=200)
    task = asyncio.create_task(universal_self_consistency(ctx, params))
    while not selector_calls(engine) or await engine.num_running() == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await engine.num_running() == 0
    assert ctx.budget.usage.verifier_generated_tokens > 0


# --- the context ------------------------------------------------------------------------


async def test_responses_too_long_for_the_context_are_cut_in_the_middle():
    long = ["A" * 150 + "END0", "short one", "B" * 150 + "END2"]
    frame = len(SELECTOR_PROMPT.format(question=QUESTION, responses=number_responses([""] * 3)))
    context_length = frame + 200 + 50  # room for 200 of the responses' 317 tokens, and the reply
    reply = "The most consistent response is Response 3"
    engine = usc_engine(reply, long, max_model_len=context_length)
    result = await run(engine, selector_max_tokens=50)
    ((prompt, _),) = selector_calls(engine)
    assert len(prompt) + 50 <= context_length
    selection = result.details["selection"]
    assert selection["cut_responses"] == [1, 3] and selection["prompt_tokens"] == len(prompt)
    kept = selection["kept_tokens"]
    assert "short one" in prompt  # a short response stays whole
    assert "END0" in prompt and "END2" in prompt  # the conclusion is kept ...
    assert f"[... {154 - kept} tokens cut ...]" in prompt  # ... around a marker
    assert result.chosen == 2 and result.text == long[2]  # the pick is the whole sample


async def test_a_context_that_cannot_hold_the_selection_picks_the_first_sample():
    engine = usc_engine("Response 2", max_model_len=300)
    result = await run(engine, selector_max_tokens=280)
    assert selector_calls(engine) == []
    assert result.chosen == 0 and result.stop_reason == "budget"
    assert result.details["selection"]["fallback"] == "context"
    assert "context" in result.explanation


# --- reasoning models, progress ------------------------------------------------------------


async def test_the_selector_reads_answer_parts_and_answers_by_its_own():
    responses = [f"thinking {k}{THOUGHT_CLOSES}answer {k}" for k in range(3)]
    engine = usc_engine(
        f"Response 1 looks off{THOUGHT_CLOSES}The most consistent response is Response 3",
        responses,
        reasoning=True,
    )
    result = await run(engine, selector_max_tokens=100)
    ((prompt, _),) = selector_calls(engine)
    assert "Response 1:\nanswer 0" in prompt and "thinking" not in prompt
    assert result.chosen == 2 and result.content == "answer 2"


async def test_a_selector_thought_that_does_not_close_is_said_so():
    engine = usc_engine("Response 2 maybe, let me think " * 4, reasoning=True)
    result = await run(engine)
    assert result.chosen == 0
    assert result.details["selection"]["fallback"] == "no_response"
    assert f"did not close within {REPLY_TOKENS} tokens" in result.explanation


async def test_the_selection_is_a_progress_event():
    events: list[dict[str, Any]] = []

    async def progress(event: dict[str, Any]) -> None:
        events.append(event)

    ctx = await context(usc_engine("Response 2"), NoMathGrader())
    ctx.progress = progress
    params = UniversalSelfConsistencyParams(n=3, sampling=SAMPLING)
    await universal_self_consistency(ctx, params)
    assert [e["event"] for e in events] == ["sample", "sample", "sample", "selection"]
    assert events[-1] == {"event": "selection", "response": 2, "chosen": 1, "fallback": None}


# --- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"n": 0}, "choice.params.n", "greater than or equal to 1"),
        ({"n": 65}, "choice.params.n", "exceeds this server's limit"),
        ({"selector_max_tokens": 0}, "choice.params.selector_max_tokens", "greater than"),
        ({"selector_prompt": "Pick one."}, "choice.params.selector_prompt", "{responses}"),
        (
            {"selector_prompt": "{responses} for {task}"},
            "choice.params.selector_prompt",
            "unknown placeholder {task}",
        ),
        ({"selector_prompt": "{responses} {"}, "choice.params.selector_prompt", "{{ }}"),
        ({"selector": "judge"}, "choice.params.selector", "unknown parameter"),
    ],
)
async def test_parameter_errors_are_refused_before_any_sample(params, param, words):
    engine = usc_engine("Response 1")
    svc = Service(engine, Verifiers(NoMathGrader()), discover())  # type: ignore[arg-type]
    choice = StrategyChoice(strategy="universal_self_consistency", params=params)
    with pytest.raises(InvalidRequest) as caught:
        await svc.prepare(request(model="scripted", messages=MESSAGES, choice=choice))
    assert caught.value.param == param
    assert words in caught.value.message
    assert engine.calls == []


def test_a_template_may_name_the_question_or_leave_it_out():
    assert check_template("Which of these is best?\n{responses}").endswith("{responses}")
    assert check_template(SELECTOR_PROMPT) == SELECTOR_PROMPT
    assert "{question}" in SELECTOR_PROMPT and "{responses}" in SELECTOR_PROMPT


@pytest.mark.parametrize(
    ("reply", "pick"),
    [
        ("The most consistent response is Response 2.", 2),
        ("response #3", 3),
        ("Responses 1 and 2 agree", None),  # "Responses" is not "Response"
        ("Response 12", None),
        ("", None),
    ],
)
def test_read_choice(reply, pick):
    assert read_choice(reply, 3)[0] == pick


@pytest.mark.parametrize(
    ("lengths", "room", "share"),
    [([10, 100, 100], 110, 50), ([10, 20, 300], 100, 70), ([50, 50], 60, 30), ([5], 3, 3)],
)
def test_equal_share_keeps_short_responses_whole(lengths, room, share):
    assert equal_share(lengths, room) == share
    assert sum(min(n, share) for n in lengths) <= room


# --- the real engine ----------------------------------------------------------------------


async def test_universal_self_consistency_on_the_engine(engine, grader):
    ctx = await make_context(engine, grader, BudgetLimits())
    strategy = discover()["universal_self_consistency"]
    params = {"n": 3, "selector_max_tokens": 8, "sampling": {"max_tokens": 16, "seed": 5}}
    result = await strategy.execute(ctx, strategy.parse_params(params))
    indices = [c.index for c in result.candidates]
    assert len(indices) == 3 and result.chosen in indices
    selection = result.details["selection"]
    assert isinstance(selection["text"], str) and selection["responses"] == indices
    if selection["fallback"] is None:  # a random model rarely names a response
        assert result.chosen == indices[selection["response"] - 1]
    else:
        assert selection["fallback"] in ("no_response", "out_of_range")
        assert result.chosen == indices[0]
    usage = result.usage
    assert usage.generated_tokens == sum(c.tokens for c in result.candidates)
    assert usage.samples_started == usage.samples_finished == 3
    assert 0 < usage.verifier_generated_tokens <= 8
    assert usage.verifier_prompt_tokens == selection["prompt_tokens"]
    assert usage.verifier_tokens > 0 and usage.verifier_flops > 0
    assert await wait_until_idle(engine) == 0


def test_the_strategy_page_quotes_the_default_selector_prompt():
    page = Path(__file__).parents[1] / "docs" / "strategies" / "universal_self_consistency.md"
    assert f"```text\n{SELECTOR_PROMPT}\n```" in page.read_text()
