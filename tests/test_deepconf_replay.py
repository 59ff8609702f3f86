"""DeepConf replay: the online strategy re-run on recorded full-length traces bills and
votes as the live strategy would, and is compared with self-consistency at equal tokens."""

from __future__ import annotations

import pytest

from ttscale.benchmarks.cli import main as bench_main
from ttscale.benchmarks.datasets import BenchError
from ttscale.benchmarks.deepconf_replay import (
    PoolTrace,
    confidence_auroc,
    offline,
    online,
    replay_deepconf,
)
from ttscale.benchmarks.grid import SamplingConfig
from ttscale.benchmarks.records import RecordWriter, RunConfig, open_run
from ttscale.strategies.deepconf import DeepConfParams

from .support.bench_fixtures import record, trace


def pool_trace(label: int, confidence: float, tokens: int = 100, low_at: int | None = None):
    """A trace whose windows stay at `confidence`, or fall to 1.0 at `low_at` tokens."""
    drops = ((10, confidence),) + (((low_at, 1.0),) if low_at else ())
    return PoolTrace(label, tokens, 1.0 if low_at else confidence, drops)


def recorded(label: int, correct: bool, confidence: float, tokens: int = 100, low_at=None):
    drops = [10, confidence] + ([low_at, 1.0] if low_at else [])
    scores = {"confidence": 1.0 if low_at else confidence, "confidence_drops": drops}
    return trace(str(label), label, correct, tokens=tokens, scores=scores)


IN_ORDER = list(range(8))


def test_a_trace_stops_at_its_first_drop_below_the_threshold():
    t = pool_trace(0, 5.0, low_at=30)
    assert t.stop_at(5.0) == 30 and t.stop_at(0.5) is None and t.stop_at(6.0) == 10


def test_low_confidence_traces_are_billed_to_their_stop_and_do_not_vote():
    # warm-up: four traces at 5.0 set the bar at 5.0; then two confident traces of the
    # wrong class 1 and two of class 1 that fall low at 30 tokens
    pool = [pool_trace(0, 5.0)] * 4 + [pool_trace(1, 6.0)] * 2 + [pool_trace(1, 6.0, low_at=30)] * 2
    params = DeepConfParams(n=8, warmup=4, consensus=None)
    credit, tokens = online(pool, IN_ORDER, params, right={0})
    assert tokens == 4 * 100 + 2 * 100 + 2 * 30
    assert credit == 1.0  # class 0 holds 4 x 5.0 = 20 against 2 x 6.0 = 12


def test_a_warm_up_that_already_agrees_saves_every_other_trace():
    # four agreeing votes: P(leader stays leader) = 31/32 >= 0.95 (three: 15/16, not yet)
    pool = [pool_trace(0, 5.0)] * 8
    credit, tokens = online(pool, IN_ORDER, DeepConfParams(n=8, warmup=4), right={0})
    assert (credit, tokens) == (1.0, 400.0)


def test_a_decided_vote_bills_the_traces_in_flight_what_they_had():
    # warm-up 3:1 for class 0; later class-0 traces of 50, 60, 70 and 200 tokens, four in
    # flight: after the 70-token one, 6:1 gives P = 0.965 and the 200-token one stops at 70
    lengths = (50, 60, 70, 200)
    pool = [pool_trace(0, 5.0)] * 3 + [pool_trace(1, 5.0)]
    pool += [PoolTrace(0, t, 5.0, ((10, 5.0),)) for t in lengths]
    credit, tokens = online(pool, IN_ORDER, DeepConfParams(n=8, warmup=4), right={0})
    assert (credit, tokens) == (1.0, 400.0 + 50 + 60 + 70 + 70)


def test_offline_keeps_the_variants_top_share_by_confidence():
    # 9 right traces at 2.0 and one wrong at 9.0: high (top 90%) keeps all and the
    # nine outweigh it (18 > 9); low (top 10%) keeps only the confident wrong one
    pool = [pool_trace(0, 2.0)] * 9 + [pool_trace(1, 9.0)]
    assert offline(pool, {0}, "high") == (1.0, 1000.0)
    assert offline(pool, {0}, "low") == (0.0, 1000.0)


def test_replay_compares_each_row_with_self_consistency_at_its_tokens():
    samples = [recorded(0, True, 5.0)] * 6 + [recorded(1, False, 5.0, low_at=20)] * 2
    records = [record(f"p{i}", "pool", 8, True, samples, strategy="deepconf") for i in range(3)]
    rows = replay_deepconf(records, [DeepConfParams(variant="high")], pool="pool@8", draws=20)
    assert [r.label.split(" (")[0] for r in rows] == [
        "self-consistency, all 8",
        "adaptive self-consistency",
        "DeepConf-high offline",
        "DeepConf-low offline",
        "DeepConf-high online",
    ]
    everything = rows[0]
    assert everything.tokens == 800 and everything.saving == 0.0
    assert everything.matched.mean == everything.accuracy.mean  # itself, at its own tokens
    assert everything.difference.mean == 0.0
    deepconf_online = rows[-1]
    assert deepconf_online.tokens < everything.tokens and deepconf_online.accuracy.mean == 1.0


def test_live_settings_on_the_same_problems_are_compared_at_their_own_tokens():
    samples = [recorded(0, True, 5.0, tokens=100)] * 4 + [recorded(1, False, 5.0)] * 4
    records = [record("p1", "pool", 8, True, samples, strategy="deepconf")]
    live = record("p1", "pf", 4, False, strategy="particle_filtering", tokens=200)
    live = live.model_copy(update={"verifier_tokens": 900})
    rows = replay_deepconf([*records, live], [], pool="pool@8", draws=50)
    row = rows[-1]
    assert row.label == "live: pf@4 (+900 verifier tokens)"
    assert (row.accuracy.mean, row.tokens, row.saving) == (0.0, 200.0, 0.75)
    # self-consistency over two of the eight traces (its 200 tokens): both right 6/28 of
    # the time, one of each 16/28 (a tie, worth half): 6/28 + 8/28 = 0.5
    assert row.matched.mean == pytest.approx(0.5, abs=0.1)


def test_confidence_auroc_counts_right_over_wrong_pairs_within_problems():
    # p1: right traces at 5 and 3, a wrong one at 4: one of two pairs ordered right;
    # p2 has no wrong trace and does not count
    p1 = [recorded(0, True, 5.0), recorded(0, True, 3.0), recorded(1, False, 4.0)]
    p2 = [recorded(0, True, 1.0)] * 3
    records = [record("p1", "pool", 3, True, p1), record("p2", "pool", 3, True, p2)]
    assert confidence_auroc(records, "pool@3") == (0.5, 1)


def test_the_pool_must_hold_recorded_confidences():
    records = [record("p1", "self_consistency", 4, True)]
    with pytest.raises(BenchError, match="no confidence"):
        replay_deepconf(records, [], pool="self_consistency@4", draws=2)


def test_replay_command_finds_the_full_trace_pool(tmp_path, capsys):
    config = RunConfig(
        model="m", backend="in-process", prompt_template="{problem}", sampling=SamplingConfig()
    )
    open_run(tmp_path, config)
    writer = RecordWriter(tmp_path)
    samples = [recorded(0, True, 5.0)] * 8
    writer.write(record("p1", "pool", 8, True, samples, strategy="deepconf", params={"warmup": 8}))
    writer.close()
    assert bench_main(["replay", str(tmp_path), "--deepconf", "--draws", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("pool: pool@8 (1 problems)")
    online_rows = [line for line in lines if "online" in line]
    assert len(online_rows) == 4
    # unanimous and confident: the default online run stops after its four warm-up traces
    assert online_rows[0].split(" | ")[2:4] == ["400", "50.0%"]
