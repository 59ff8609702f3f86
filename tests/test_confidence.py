"""Token and group confidence (DeepConf, arXiv 2508.15260), and the engine's online stop:
a sample whose window confidence falls below `confidence_stop.threshold` is aborted in
vLLM itself, keeping (and reporting) the tokens it had."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttscale.engine.confidence import (
    LOW_CONFIDENCE,
    confidence_drops,
    first_low_window,
    group_confidences,
    lowest_group_confidence,
    topk_confidence,
)
from ttscale.engine.types import ConfidenceStop, SamplingSpec

from .support.servers import wait_until_idle

CHAT = [{"role": "user", "content": "Count to ten."}]


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    assert topk_confidence([-1.0, -3.0]) == 2.0
    # a peaked distribution (the runners-up far below the top token) is confident
    assert topk_confidence([-0.01, -9.0, -9.5]) > topk_confidence([-1.0, -1.2, -1.3])


def test_impossible_tokens_and_empty_positions_do_not_make_infinite_confidence():
    assert topk_confidence([-2.0, -math.inf, float("nan")]) == 2.0
    assert topk_confidence([]) == 0.0


def test_group_confidence_slides_over_full_windows():
    assert group_confidences([1.0, 2.0, 3.0, 4.0], 2) == [1.5, 2.5, 3.5]
    assert lowest_group_confidence([4.0, 1.0, 1.0, 4.0], 2) == 1.0


def test_a_trace_shorter_than_one_window_is_one_group():
    assert group_confidences([1.0, 2.0], 5) == [1.5]
    assert lowest_group_confidence([], 5) is None


def test_first_low_window_counts_the_tokens_up_to_the_window_that_fell_low():
    stop = ConfidenceStop(window=2, threshold=3.0)
    confidences = [5.0, 5.0, 5.0, 1.0, 1.0, 5.0]
    # windows: 5, 5, 3 (not below 3), 1 -> the fifth token closes the first low window
    assert first_low_window(confidences, 0, stop) == 5
    assert first_low_window(confidences[:4], 0, stop) is None
    assert first_low_window([0.0], 0, stop) is None  # no full window yet: never stopped


def test_first_low_window_checks_only_positions_from_since():
    """Adapters pass what they had before the latest chunk: each window is checked once,
    and feeding the tokens chunk by chunk finds the same position as one pass."""
    stop = ConfidenceStop(window=3, threshold=2.0)
    confidences = [3.0, 3.0, 3.0, 2.5, 1.0, 1.0, 0.5, 3.0]
    one_pass = first_low_window(confidences, 0, stop)
    found = None
    for since in range(len(confidences)):
        found = first_low_window(confidences[: since + 1], since, stop)
        if found is not None:
            break
    assert found == one_pass == 6
    # from the last position on, only the window (1, 0.5, 3) is checked: mean 1.5
    assert first_low_window(confidences, 7, stop) == 8
    assert first_low_window(confidences, 7, ConfidenceStop(window=3, threshold=1.5)) is None


def test_confidence_drops_mark_each_new_lowest_full_window():
    # windows of 2: 5, 5, 3, 1, 3 -> new lows at 2 tokens (5), 4 (3) and 5 (1)
    assert confidence_drops([5.0, 5.0, 5.0, 1.0, 1.0, 5.0], 2) == [(2, 5.0), (4, 3.0), (5, 1.0)]
    assert confidence_drops([1.0, 2.0], 5) == []  # no full window: the watch never stops it


@given(
    st.lists(st.floats(0.0, 10.0), max_size=40),
    st.integers(1, 6),
    st.floats(0.0, 10.0),
)
def test_confidence_drops_replay_the_watch_for_any_threshold(confidences, window, threshold):
    """The first drop below a threshold is where the online watch stops the trace."""
    below = [tokens for tokens, low in confidence_drops(confidences, window) if low < threshold]
    stop = ConfidenceStop(window=window, threshold=threshold)
    assert (below[0] if below else None) == first_low_window(confidences, 0, stop)


def test_confidence_stop_needs_top_k_logprobs():
    stop = ConfidenceStop(window=4, threshold=1.0)
    with pytest.raises(ValueError, match="confidence_stop needs top-k logprobs"):
        SamplingSpec(confidence_stop=stop)
    assert SamplingSpec(logprobs=5, confidence_stop=stop).confidence_stop == stop


# --- through the real in-process engine (tiny random Qwen2) --------------------------


def _spec(max_tokens: int, threshold: float | None, window: int = 4) -> SamplingSpec:
    stop = None if threshold is None else ConfidenceStop(window=window, threshold=threshold)
    return SamplingSpec(
        temperature=1.0,
        max_tokens=max_tokens,
        ignore_eos=True,
        seed=21,
        logprobs=5,
        confidence_stop=stop,
    )


async def test_logprobs_give_one_confidence_per_token(engine):
    prompt = await engine.render_chat(CHAT)
    sample = (await engine.generate(prompt, _spec(8, None))).samples[0]
    assert sample.token_confidences is not None
    assert len(sample.token_confidences) == sample.num_tokens == 8
    assert all(c > 0 for c in sample.token_confidences)  # log-probabilities are negative


async def test_a_sample_below_the_bar_is_aborted_in_the_engine_with_its_tokens(engine):
    prompt = await engine.render_chat(CHAT)
    generation = engine.generate(prompt, _spec(600, 1e9), n=2)
    result = await generation
    for sample in result.samples:
        assert sample.finish_reason == "abort" and sample.stop_reason == LOW_CONFIDENCE
        assert 4 <= sample.num_tokens < 600  # the first full window already fell low
        assert len(sample.token_confidences) == sample.num_tokens
    assert await wait_until_idle(engine) == 0


async def test_a_threshold_of_minus_infinity_runs_to_full_length_as_without_a_watch(engine):
    """The watched (streamed) path returns what the unwatched one does, token for token."""
    prompt = await engine.render_chat(CHAT)
    watched = (await engine.generate(prompt, _spec(40, -math.inf))).samples[0]
    plain = (await engine.generate(prompt, _spec(40, None))).samples[0]
    assert watched.finish_reason == "length" and watched.stop_reason is None
    assert watched.num_tokens == 40
    assert watched.token_ids == plain.token_ids and watched.text == plain.text
    assert watched.token_confidences == plain.token_confidences
    assert watched.token_entropies == plain.token_entropies


async def test_the_stop_comes_at_the_window_the_threshold_designates(engine):
    prompt = await engine.render_chat(CHAT)
    full = (await engine.generate(prompt, _spec(64, None, window=8))).samples[0]
    groups = sorted(group_confidences(full.token_confidences, 8))
    threshold = groups[len(groups) // 2]  # the median window: some fall below it
    expected = first_low_window(
        full.token_confidences, 0, ConfidenceStop(window=8, threshold=threshold)
    )
    stopped = (await engine.generate(prompt, _spec(64, threshold, window=8))).samples[0]
    assert expected is not None and expected < 64
    assert stopped.stop_reason == LOW_CONFIDENCE
    # the same seeded tokens up to the low window (a few more may come before vLLM stops)
    assert expected <= stopped.num_tokens < 64
    assert stopped.token_ids == full.token_ids[: stopped.num_tokens]
    assert await wait_until_idle(engine) == 0
