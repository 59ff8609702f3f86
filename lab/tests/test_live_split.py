"""Splitting a live adaptive run's accuracy change into the stop rule's and the redraws'."""

from __future__ import annotations

from pathlib import Path

from lab.live_split import (
    Repeats,
    again_summary,
    drawn_again,
    repeats,
    split,
    summary,
)
from tests.support.bench_fixtures import record, trace, write_run
from ttscale.benchmarks.summary import pooled_records

ADAPTIVE = {"n": 16, "adaptive": True, "sampling": {"seed": 1}}
RIGHT, WRONG = trace("7", 0, True), trace("9", 1, False)


def test_the_rule_on_the_fixed_samples_separates_stopping_from_redrawing(tmp_path: Path):
    """p1: the first three samples agree on the runner-up of a 9-7 vote, so the rule
    stops on it (the rule's loss). p2: the rule would have kept the fixed run's right
    answer, but the live run voted on redrawn samples and lost (the redraws' loss)."""
    tied_late = [WRONG] * 3 + [RIGHT] * 9 + [WRONG] * 4
    records = [
        record("p1", "self_consistency", 16, True, tied_late),
        record("p1", "adaptive", 16, False, [WRONG] * 3, params=ADAPTIVE),
        record("p2", "self_consistency", 16, True, [RIGHT] * 16),
        record("p2", "adaptive", 16, False, [WRONG] * 3, params=ADAPTIVE),
    ]
    directory = write_run(tmp_path / "run", records)
    splits = split(pooled_records([Path(directory)]), "adaptive")
    assert [(s.problem_id, s.fixed, s.rule_on_fixed_samples, s.live) for s in splits] == [
        ("p1", True, False, False),
        ("p2", True, True, False),
    ]
    assert [s.rule_stopped_at for s in splits] == [3, 3]
    assert "stop rule: -1 problems; redraws: -1" in summary(splits)
    assert "fixed and live: 3 of 6 (50%)" in summary(splits)  # p1 repeated, p2 did not


def test_fixed_n_drawn_again_shows_how_much_redraws_alone_change(tmp_path: Path):
    """The same seeds batched differently: p1's fourth sample came out otherwise (another
    length), which turned a 2-2 tie into a loss; p2's samples all repeated."""
    first = [RIGHT, RIGHT, WRONG, WRONG]
    redrawn = [RIGHT, RIGHT, WRONG, trace("9", 1, False, tokens=12)]
    records = [
        record("p1", "self_consistency", 4, True, first),
        record("p1", "again", 4, False, redrawn),
        record("p2", "self_consistency", 4, True, [RIGHT] * 4),
        record("p2", "again", 4, True, [RIGHT] * 4),
    ]
    agains = drawn_again(pooled_records([Path(write_run(tmp_path / "run", records))]), "again")
    assert [(a.problem_id, a.first, a.second) for a in agains] == [
        ("p1", True, False),
        ("p2", True, True),
    ]
    assert [(a.repeats.alike, a.repeats.compared) for a in agains] == [(3, 4), (4, 4)]
    text = again_summary(agains)
    assert "right: first 2, again 1 (0 won, 1 lost)" in text
    assert "alike (length and answer): 7 of 8 (88%)" in text
    assert "p1: first True, again False" in text and "p2:" not in text


def test_samples_pair_by_their_recorded_index_when_a_live_run_aborted_some():
    """Four in flight, three finished alike and stopped the vote: sample 1 was aborted, so
    the live run recorded samples 0, 2 and 3, each the same as the fixed run's."""
    numbered = [trace("7", 0, True, tokens=t).model_copy(update={"index": i})
                for i, t in enumerate([268, 289, 282, 272])]  # fmt: skip
    fixed = record("p", "self_consistency", 4, True, numbered)
    live = record("p", "adaptive", 4, True, [numbered[0], numbered[2], numbered[3]])
    live = live.model_copy(update={"aborted_tokens": 120})
    assert repeats(fixed, live) == Repeats(alike=3, compared=3)
    # a fixed run recorded before indices were kept drew every seed, in order
    unnumbered = [s.model_copy(update={"index": None}) for s in numbered]
    old_fixed = fixed.model_copy(update={"samples": unnumbered})
    assert repeats(old_fixed, live) == Repeats(alike=3, compared=3)
    # an old live run that aborted samples cannot say which seeds it kept: not compared
    old_live = live.model_copy(update={"samples": [unnumbered[0], *unnumbered[2:]]})
    assert repeats(old_fixed, old_live) == Repeats(alike=0, compared=0)


def test_live_cost_is_a_ratio_of_total_tokens_so_long_problems_weigh_what_they_cost(
    tmp_path: Path,
):
    """p1 is long and the live run saved most of it; p2 is short and saved nothing. Per
    problem the ratios are 0.4 and 1.0 (0.7 on average); in total the live run generated
    500 tokens where fixed N generated 1,100, which is what the server paid."""
    records = [
        record("p1", "self_consistency", 16, True, [RIGHT] * 16, tokens=1000),
        record("p1", "adaptive", 16, True, [RIGHT] * 3, params=ADAPTIVE, tokens=400),
        record("p2", "self_consistency", 16, False, [WRONG] * 16, tokens=100),
        record("p2", "adaptive", 16, True, [RIGHT] * 3, params=ADAPTIVE, tokens=100),
    ]
    splits = split(pooled_records([Path(write_run(tmp_path / "run", records))]), "adaptive")
    text = summary(splits)
    assert "live 250, fixed 550; live / fixed 0.455 [" in text
    assert "(54.5% fewer)" in text
    assert "accuracy change, live - fixed: +50.0 points [+0.0, +100.0]" in text


def test_the_rule_on_fixed_samples_in_seed_order_is_what_a_live_run_should_cost(
    tmp_path: Path,
):
    """A live run draws each problem once, in seed order. On p1 the first three samples
    agree, so the rule stops at three (30 of 160 tokens); on p2 the samples alternate
    between two answers, and it needs all sixteen. The live run's cost is compared with
    that, not only with fixed N."""
    alternating = [RIGHT, WRONG] * 8
    records = [
        record("p1", "self_consistency", 16, True, [RIGHT] * 16, tokens=160),
        record("p1", "adaptive", 16, True, [RIGHT] * 3, params=ADAPTIVE, tokens=30),
        record("p2", "self_consistency", 16, True, alternating, tokens=160),
        record("p2", "adaptive", 16, True, alternating, params=ADAPTIVE, tokens=160),
    ]
    splits = split(pooled_records([Path(write_run(tmp_path / "run", records))]), "adaptive")
    assert [s.rule_stopped_at for s in splits] == [3, 16]
    assert [s.rule_tokens for s in splits] == [30, 160]
    text = summary(splits)
    assert "the rule on fixed's samples in seed order: 95 per problem; rule / fixed 0.594 [" in text
