"""DeepConf (online): the threshold from the warm-up, traces stopped in the engine (billed,
not voting), the confidence-weighted vote and the consensus stop, pinned on the scripted
engine; then once through the real engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from ttscale.strategies.base import StrategyContext, Verifiers
from ttscale.strategies.budget import Budget, BudgetLimits
from ttscale.strategies.deepconf import DeepConfParams, deepconf, percentile, warmup_threshold
from ttscale.strategies.registry import discover
from ttscale.strategies.strategy_choice import split_model_name

from .support.fakes import Scripted, ScriptedEngine
from .support.servers import wait_until_idle

QUESTION = "What is x?"
SEEDED = {"temperature": 0.8, "max_tokens": 200, "seed": 0}


def traces_engine(traces: Sequence[tuple[str, float | tuple[float, ...]]]) -> ScriptedEngine:
    """Trace k (its seed, with sampling.seed=0) answers traces[k][0] with token
    confidences traces[k][1]; every text is 40 tokens long."""

    def script(prompt, spec, index):
        answer, confidence = traces[spec.seed % len(traces)]
        return Scripted(f"\\boxed{{{answer}}}".ljust(40, "."), confidence=confidence)

    return ScriptedEngine(script)


async def context(engine, grader, limits=None, events=None) -> StrategyContext:
    async def progress(event: dict[str, Any]) -> None:
        events.append(event)

    messages = [{"role": "user", "content": QUESTION}]
    return StrategyContext(
        engine=engine,
        verifiers=Verifiers(grader),
        budget=Budget(limits or BudgetLimits()),
        messages=messages,
        prompt_ids=await engine.render_chat(messages),
        question=QUESTION,
        progress=progress if events is not None else None,
    )


def params(**given: Any) -> DeepConfParams:
    return DeepConfParams(**{"window": 4, "consensus": None, "sampling": SEEDED, **given})


def test_percentile_interpolates_between_ranks_like_numpy():
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([4.0, 1.0, 3.0, 2.0], 10) == pytest.approx(1.3)
    assert percentile([2.5], 90) == 2.5


@pytest.mark.parametrize(
    ("variant", "threshold", "kept"), [("low", 3.7, [3]), ("high", 1.3, [1, 2, 3])]
)
async def test_the_warmup_sets_the_threshold_and_the_variant_keeps_its_share(
    grader, variant, threshold, kept
):
    engine = traces_engine([("1", 1.0), ("1", 2.0), ("1", 3.0), ("1", 4.0)])
    result = await deepconf(await context(engine, grader), params(n=4, warmup=4, variant=variant))
    assert result.details["warmup_minima"] == [1.0, 2.0, 3.0, 4.0]
    assert result.details["threshold"] == pytest.approx(threshold)
    assert result.details["threshold"] == warmup_threshold([1.0, 2.0, 3.0, 4.0], variant)
    assert result.details["retained"] == kept


async def test_a_trace_whose_window_falls_low_is_stopped_billed_and_does_not_vote(grader):
    # warm-ups at 3 and 4: DeepConf-high's bar is 3.1. Trace 2 is confident for 10 tokens,
    # then 0.5: its 4-token window falls to 2.75 at the 12th token, where it is aborted.
    falls = (5.0,) * 10 + (0.5,)
    engine = traces_engine([("7", 3.0), ("7", 4.0), ("9", falls), ("7", 3.5)])
    events: list[dict[str, Any]] = []
    result = await deepconf(
        await context(engine, grader, events=events), params(n=4, warmup=2, variant="high")
    )
    assert result.details["threshold"] == pytest.approx(3.1)
    assert result.details["stopped_early"] == [{"index": 2, "tokens": 12}]
    stopped = next(c for c in result.candidates if c.index == 2)
    assert stopped.finish_reason == "abort" and stopped.answer == "9"  # in its 12 tokens
    assert result.details["retained"] == [1, 3]
    assert result.votes == {"7": 7.5} and result.answer == "7"
    usage = result.usage
    assert usage.samples_aborted == 1 and usage.aborted_tokens == 12
    assert usage.generated_tokens == 3 * 40 + 12
    assert result.details["tokens_saved_estimate"] == 40 - 12
    assert {"event": "low_confidence", "index": 2, "tokens": 12} in events
    assert events[0]["event"] == "sample" and events[2]["event"] == "threshold"


async def test_votes_are_weighted_by_trace_confidence(grader):
    # "4" has the most retained traces, but "9" the larger summed confidence; the first
    # trace (confidence 3, below the bar of 3.3) does not vote at all
    engine = traces_engine([("4", 3.0), ("4", 4.0), ("4", 4.0), ("9", 9.0)])
    result = await deepconf(await context(engine, grader), params(n=4, warmup=4, variant="high"))
    assert result.details["retained"] == [1, 2, 3]
    assert result.votes == {"4": 8.0, "9": 9.0}
    assert result.answer == "9" and result.chosen == 3
    # every candidate carries its confidence and where its lowest window fell (for replay):
    # constant 3.0, so the one new low is the first full 4-token window
    assert result.candidates[0].scores == {"confidence": 3.0, "confidence_drops": [4, 3.0]}
    assert result.details["trace_confidence"].startswith("lowest group confidence")


async def test_the_trace_confidence_is_its_lowest_window(grader):
    # one dip to 1.0 over four tokens makes a trace with a mean near 5 a 1.0 trace
    dip = (5.0,) * 20 + (1.0,) * 4 + (5.0,)
    engine = traces_engine([("1", dip), ("1", 2.0)])
    result = await deepconf(await context(engine, grader), params(n=2, warmup=2))
    assert result.details["warmup_minima"] == [1.0, 2.0]


async def test_a_decided_vote_stops_the_run(grader):
    engine = traces_engine([("5", 2.0)])
    result = await deepconf(
        await context(engine, grader), params(n=16, warmup=2, consensus=0.95, parallel=1)
    )
    # retained votes 2 (warm-up), 3, then 4: P(leader stays leader) = 0.969 >= 0.95
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_started == 4
    assert result.details["never_started"] == 12
    assert result.details["tokens_saved_estimate"] == 12 * 40
    assert "P(leader stays leader) = 0.969" in result.explanation


async def test_a_warmup_that_already_agrees_skips_the_rest(grader):
    engine = traces_engine([("5", 2.0)])
    result = await deepconf(await context(engine, grader), params(n=16, warmup=4, consensus=0.95))
    # equal confidences all tie the threshold and are kept: 4 agreeing votes, P = 0.969
    assert result.stop_reason == "early_stop"
    assert result.usage.samples_started == 4


async def test_the_generated_token_cap_holds(grader):
    engine = traces_engine([("5", 2.0)])
    ctx = await context(engine, grader, BudgetLimits(max_generated_tokens=100))
    result = await deepconf(ctx, params(n=8, warmup=2))
    assert result.usage.generated_tokens <= 100
    assert result.stop_reason == "budget"


def test_parameters_are_typed_and_checked():
    assert DeepConfParams(n=2).warmup_traces == 2
    assert DeepConfParams().warmup_traces == 4
    with pytest.raises(ValidationError, match="warmup must not exceed n"):
        DeepConfParams(n=4, warmup=5)
    with pytest.raises(ValidationError):
        DeepConfParams(colour="red")
    # the warm-up together, then traces in rounds of the warm-up's size (or all at once)
    assert DeepConfParams(n=32, warmup=4).samples_at_once() == 4
    assert DeepConfParams(n=32, warmup=4, consensus=None).samples_at_once() == 28


def test_selectable_by_model_suffix():
    base, choice = split_model_name("m:deepconf?variant=low&window=32&sampling.max_tokens=64")
    strategy = discover()[choice.strategy]
    parsed = strategy.parse_params(choice.params)
    assert base == "m" and strategy.name == "deepconf"
    assert (parsed.variant, parsed.window, parsed.sampling.max_tokens) == ("low", 32, 64)


async def test_on_the_engine_stopped_traces_fell_below_the_bar_and_every_token_is_billed(
    engine, grader
):
    messages = [{"role": "user", "content": "What is 6 times 7?"}]
    ctx = StrategyContext(
        engine=engine,
        verifiers=Verifiers(grader),
        budget=Budget(BudgetLimits(), policy_shape=engine.info.shape),
        messages=messages,
        prompt_ids=await engine.render_chat(messages),
        question=messages[0]["content"],
    )
    sampling = {"temperature": 1.0, "max_tokens": 32, "ignore_eos": True, "seed": 5}
    given = DeepConfParams(
        n=7, warmup=3, variant="low", window=8, top_k=5, consensus=None, sampling=sampling
    )
    result = await deepconf(ctx, given)
    details = result.details
    assert details["threshold"] == warmup_threshold(details["warmup_minima"], "low")
    for row in details["traces"]:
        if row["stopped_early"]:
            assert row["phase"] == "final" and row["confidence"] < details["threshold"]
            assert 8 <= row["tokens"] < 32
        else:
            assert row["tokens"] == 32  # ignore_eos: full length
            assert row["retained"] == (row["confidence"] >= details["threshold"])
    for candidate, row in zip(result.candidates, details["traces"], strict=True):
        flat = candidate.scores["confidence_drops"]
        drops = list(zip(flat[::2], flat[1::2], strict=True))
        assert drops[-1][1] == pytest.approx(candidate.scores["confidence"])  # the lowest
        if row["stopped_early"]:  # the replay's stop point: where the watch fired, or before
            assert next(t for t, low in drops if low < details["threshold"]) <= row["tokens"]
    stopped = sum(s["tokens"] for s in details["stopped_early"])
    usage = result.usage
    assert usage.aborted_tokens == stopped
    assert usage.generated_tokens == sum(c.tokens for c in result.candidates)
    assert usage.samples_started == 7 == len(details["traces"])
    assert details["retained"] and result.text  # the most confident trace is returned
    assert details["tokens_saved_estimate"] == 32 * len(details["stopped_early"]) - stopped
    assert await wait_until_idle(engine) == 0
