"""Trace replay: re-voting recorded samples offline gives the hand-computed accuracies."""

from __future__ import annotations

import pytest

from ttscale.benchmarks.datasets import BenchError
from ttscale.benchmarks.replay import default_pool, powers_of_two, replay

from .support.bench_fixtures import record, three_right_two_wrong, trace


def _by_method(points, k):
    return {p.method: p.accuracy.mean for p in points if p.k == k}


def test_rules_on_one_pool_match_hand_computed_values():
    """Majority prefers the three right samples; entropy and logprob prefer the two
    confident wrong ones: replay must tell these rules apart."""
    points = replay([record("p1", "self_consistency", 5, True, three_right_two_wrong())])
    assert [p.k for p in points if p.method == "majority"] == [1, 2, 4, 5]
    at5, at1, at2 = _by_method(points, 5), _by_method(points, 1), _by_method(points, 2)
    assert at5 == {
        "pass@k": 1.0,
        "majority": 1.0,
        "inverse_entropy": 0.0,  # weights 3 x 0.5 against 2 x 10
        "best_of_n(logprob)": 0.0,
    }
    assert at1["pass@k"] == at1["majority"] == pytest.approx(0.6)
    assert at2["majority"] == pytest.approx(0.6)  # 3 right pairs, 6 ties worth 1/2
    assert at2["pass@k"] == pytest.approx(0.9)
    assert at2["inverse_entropy"] == pytest.approx(0.3)  # only right-right pairs win


def test_costs_scale_with_k():
    samples = [trace("1", 0, True, tokens=t) for t in (10, 20, 30, 40)]
    points = replay([record("p1", "self_consistency", 4, True, samples)])
    tokens = {p.k: p.generated_tokens for p in points if p.method == "majority"}
    assert tokens == {1: 25.0, 2: 50.0, 4: 100.0}
    flops = {p.k: p.tflops for p in points if p.method == "majority"}
    assert flops[4] == pytest.approx(100 * 1e9 / 1e12)


def test_score_rules_appear_only_when_every_sample_has_the_score():
    scored = [
        trace("18", 0, True, scores={"judge": 0.9}),
        trace("20", 1, False, scores={"judge": 0.2}),
    ]
    points = replay([record("p1", "best_of_n", 2, True, scored)])
    at2 = _by_method(points, 2)
    assert at2["best_of_n(judge)"] == 1.0
    assert at2["weighted_sc(judge)"] == 1.0
    partly = [trace("18", 0, True, scores={"judge": 0.9}), trace("20", 1, False)]
    methods = {p.method for p in replay([record("p1", "best_of_n", 2, True, partly)])}
    assert not any("judge" in m for m in methods)


def test_step_scores_are_aggregated_by_their_minimum():
    steps = [
        trace("18", 0, True, scores={"prm": [0.9, 0.8]}),
        trace("20", 1, False, scores={"prm": [0.99, 0.1]}),
    ]
    at2 = _by_method(replay([record("p1", "best_of_n", 2, True, steps)]), 2)
    assert at2["best_of_n(prm)"] == 1.0


def test_unanswered_samples_abstain():
    samples = [trace(None, None, False), trace(None, None, False), trace("18", 0, True)]
    at3 = _by_method(replay([record("p1", "self_consistency", 3, True, samples)]), 3)
    assert at3["majority"] == 1.0
    nothing = [trace(None, None, False)] * 2
    at2 = _by_method(replay([record("p1", "self_consistency", 2, False, nothing)]), 2)
    assert at2["majority"] == 0.0 and at2["pass@k"] == 0.0


def test_accuracy_averages_over_problems_with_an_interval():
    records = [
        record("p1", "self_consistency", 2, True, [trace("1", 0, True)] * 2),
        record("p2", "self_consistency", 2, False, [trace("2", 0, False)] * 2),
    ]
    point = next(p for p in replay(records) if p.method == "majority" and p.k == 2)
    assert point.problems == 2
    assert point.accuracy.mean == 0.5
    assert point.accuracy.low == 0.0 and point.accuracy.high == 1.0


def test_default_pool_is_the_largest_independent_sampler():
    records = [
        record("p1", "self_consistency", 4, True),
        record("p1", "self_consistency", 8, True),
        record("p1", "sc-adaptive", 16, True, strategy="self_consistency",
               params={"adaptive": True}),
        record("p1", "ie-seq", 16, True, strategy="inverse_entropy",
               params={"mode": "sequential"}),
    ]  # fmt: skip
    assert default_pool(records) == "self_consistency@8"
    only_search = [record("p1", "step_search", 2, True)]
    assert default_pool(only_search) == "step_search@2"


def test_replay_refuses_what_the_pool_cannot_support():
    records = [record("p1", "self_consistency", 4, True)]
    with pytest.raises(BenchError, match="exceeds the smallest pool"):
        replay(records, ks=[8])
    with pytest.raises(BenchError, match="no records of setting"):
        replay(records, pool="best_of_n@4")


def test_powers_of_two_end_at_the_pool_size():
    assert powers_of_two(1) == [1]
    assert powers_of_two(8) == [1, 2, 4, 8]
    assert powers_of_two(6) == [1, 2, 4, 6]


def test_scores_that_restate_logprob_or_steps_are_not_extra_rules():
    """best_of_n without a verifier records its fallback score as mean_logprob, and a
    process verifier records NAME_steps next to NAME: neither is a rule of its own."""
    samples = [
        trace("18", 0, True, logprob=-0.5, scores={"mean_logprob": -0.5, "prm": 0.9,
                                                   "prm_steps": [0.9, 0.95]}),
        trace("20", 1, False, logprob=-0.1, scores={"mean_logprob": -0.1, "prm": 0.2,
                                                    "prm_steps": [0.2, 0.99]}),
    ]  # fmt: skip
    methods = {p.method for p in replay([record("p1", "best_of_n", 2, True, samples)])}
    assert methods == {
        "pass@k", "majority", "inverse_entropy", "best_of_n(logprob)",
        "best_of_n(prm)", "weighted_sc(prm)",
    }  # fmt: skip


def test_equal_pools_prefer_plain_self_consistency():
    records = [
        record("p1", "best_of_n", 4, True),
        record("p1", "inverse_entropy", 4, True),
        record("p1", "self_consistency", 4, True),
    ]
    assert default_pool(records) == "self_consistency@4"


def test_a_problem_without_samples_counts_as_wrong():
    records = [
        record("p1", "self_consistency", 2, True, [trace("1", 0, True)] * 2),
        record("p2", "self_consistency", 2, False, []),
    ]
    point = next(p for p in replay(records) if p.method == "majority" and p.k == 2)
    assert point.problems == 2 and point.accuracy.mean == 0.5


def test_replayed_flops_leave_out_the_verifier():
    with_judge = record("p1", "best_of_n", 2, True, [trace("1", 0, True, tokens=10)] * 2)
    with_judge = with_judge.model_copy(update={"flops": 5e12, "verifier_flops": 3e12})
    (point,) = [p for p in replay([with_judge], ks=[1]) if p.method == "majority"]
    assert point.tflops == pytest.approx(1.0)  # half the 2 TFLOPs of generating both


def test_adaptive_replay_bills_what_a_schedule_would_generate():
    """16 unanimous samples of 100 tokens: the Beta rule stops at the 4th vote. Four in
    flight stop with the next three just started (nothing to bill for them); all 16 in
    flight have every sample finished or nearly so: stopping saves nothing."""
    from ttscale.benchmarks.adaptive_replay import Schedule, simulate

    pool = [trace("1", 0, True, tokens=100)] * 16
    order = list(range(16))
    four = simulate(pool, order, Schedule(parallel=4, confidence=0.95, stopping="beta"))
    assert (four.credit, four.tokens) == (1.0, 400.0)
    sixteen = simulate(pool, order, Schedule(parallel=16, confidence=0.95, stopping="beta"))
    assert (sixteen.credit, sixteen.tokens) == (1.0, 1600.0)


def test_holding_back_replays_the_tokens_of_one_at_a_time_at_a_fraction_of_the_latency():
    """16 unanimous samples of 100 tokens, the default rule (stops at three unanimous
    votes). One at a time: 300 tokens in 300 decode steps. Four in flight: the fourth is
    billed too. Four holding back: the three the vote surely needs run together (300
    tokens in 100 steps) and the fourth never starts."""
    from ttscale.benchmarks.adaptive_replay import Schedule, simulate

    pool = [trace("1", 0, True, tokens=100)] * 16
    order = list(range(16))
    one = simulate(pool, order, Schedule(parallel=1, confidence=0.925))
    four = simulate(pool, order, Schedule(parallel=4, confidence=0.925))
    held = simulate(pool, order, Schedule(parallel=4, confidence=0.925, hold_back=True))
    assert (one.tokens, one.steps) == (300.0, 300.0)
    assert (four.tokens, four.steps) == (400.0, 100.0)
    assert (held.tokens, held.steps) == (300.0, 100.0)


def test_adaptive_replay_bills_aborted_samples_their_partial_tokens():
    """One sample at a time would never stop on a split vote; with two in flight the
    slow sample still running at the stop is billed the tokens it had made."""
    from ttscale.benchmarks.adaptive_replay import Schedule, simulate

    pool = [trace("1", 0, True, tokens=10)] * 5 + [trace("2", 1, False, tokens=1000)]
    # draw order: the slow wrong sample first, then five fast right ones
    credit, tokens, _ = simulate(
        pool, [5, 0, 1, 2, 3, 4], Schedule(parallel=2, confidence=0.95, stopping="beta")
    )
    assert credit == 1.0
    # the fast ones finish at t=10, 20, 30, 40; at 40 the four votes cannot be
    # overtaken by the two to come, and the slow one is aborted after 40 tokens
    assert tokens == 4 * 10 + 40


def test_adaptive_replay_compares_schedules_with_the_fixed_pool():
    from ttscale.benchmarks.adaptive_replay import Schedule, replay_schedules

    right = [trace("1", 0, True, tokens=100)] * 8
    split = [trace("1", 0, True, tokens=100)] * 4 + [trace("2", 1, False, tokens=100)] * 4
    records = [
        record("p1", "self_consistency", 8, True, right),
        record("p2", "self_consistency", 8, True, split),
    ]
    fixed, waves = replay_schedules(
        records, [Schedule(parallel=2, confidence=0.95)], pool="self_consistency@8", draws=20
    )
    assert fixed.schedule is None and fixed.n == 8 and fixed.tokens == 800.0
    assert fixed.accuracy.mean == pytest.approx(0.75)  # p2 is a tie: half credit
    assert waves.tokens < fixed.tokens
    assert waves.token_saving == pytest.approx(1 - waves.tokens / 800.0)
    assert waves.accuracy_change.mean == pytest.approx(waves.accuracy.mean - 0.75)


def test_truncated_samples_can_be_replayed_as_abstaining():
    """Cut-off samples that happened to end on the right number stop voting; finished
    ones keep their votes, and the fixed pool is re-voted without them too."""
    from ttscale.benchmarks.adaptive_replay import abstain_truncated, replay_schedules

    cut = trace("1", 0, True, tokens=320).model_copy(update={"finish_reason": "length"})
    wrong = trace("2", 1, False, tokens=100)
    records = [record("p1", "self_consistency", 4, True, [cut, cut, cut, wrong])]
    (kept,) = replay_schedules(records, [], pool="self_consistency@4", draws=5)
    (abstained,) = replay_schedules(
        abstain_truncated(records), [], pool="self_consistency@4", draws=5
    )
    assert kept.accuracy.mean == 1.0 and abstained.accuracy.mean == 0.0
    (samples,) = [r.samples for r in abstain_truncated(records)]
    assert [s.answer_class for s in samples] == [None, None, None, 1]
    assert samples[3] == wrong and kept.tokens == abstained.tokens == 1060.0
