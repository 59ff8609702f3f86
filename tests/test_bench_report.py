"""The report's comparisons on hand-made records: which problems count, the frontier,
paired differences and the default baseline."""

from __future__ import annotations

import pytest

from ttscale.benchmarks.cli import main as bench_main
from ttscale.benchmarks.grid import SamplingConfig, build_grid
from ttscale.benchmarks.records import RecordWriter, RunConfig, open_run, write_grid
from ttscale.benchmarks.report import build_report
from ttscale.benchmarks.summary import (
    complete_records,
    default_baseline,
    frontier,
    paired_against,
    summarize,
)
from ttscale.strategies.registry import discover

from .support.bench_fixtures import record, three_right_two_wrong, trace, write_run


def test_only_problems_every_setting_finished_are_compared():
    records = [
        record("p1", "self_consistency", 1, True),
        record("p1", "best_of_n", 1, False),
        record("p2", "self_consistency", 1, True),  # best_of_n never finished p2
    ]
    kept, left_out = complete_records(records)
    assert {r.problem_id for r in kept} == {"p1"}
    assert left_out == {"gsm8k": 1}


def test_summary_means_and_intervals():
    records = [record(f"p{i}", "self_consistency", 2, i < 3, tokens=100 * i) for i in range(4)]
    (row,) = summarize(records)
    assert (row.problems, row.n, row.samples) == (4, 2, 2.0)
    assert row.accuracy.mean == 0.75
    assert row.accuracy.low <= 0.75 <= row.accuracy.high
    assert row.generated_tokens == pytest.approx(150.0)
    assert row.tflops == pytest.approx(150 * 1e9 / 1e12)
    assert row.stop_reasons == {"completed": 4}


def test_frontier_needs_strict_improvement_on_accuracy_or_cost():
    records = [
        record("p1", "cheap", 1, False, tokens=10),
        record("p1", "costly-same", 1, False, tokens=50),  # no better, costs more
        record("p1", "costly-better", 1, True, tokens=50),
    ]
    rows = summarize(records)
    assert frontier(rows, "generated_tokens") == {"gsm8k/cheap@1", "gsm8k/costly-better@1"}


def test_paired_differences_match_settings_at_the_same_n():
    records = []
    for i in range(30):
        records.append(record(f"p{i}", "self_consistency", 4, i < 15))
        records.append(record(f"p{i}", "inverse_entropy", 4, i < 24))
        records.append(record(f"p{i}", "inverse_entropy", 1, True))  # no baseline at N=1
    (row,) = paired_against(records, "self_consistency")
    assert (row.setting, row.baseline) == ("inverse_entropy@4", "self_consistency@4")
    assert row.difference.mean == pytest.approx(0.3)
    assert row.difference.low > 0  # nine extra wins and no loss: clearly better
    assert row.token_ratio.format() == "1.000 [1.000, 1.000]"  # same samples, same tokens


def test_paired_rows_report_tokens_against_the_baseline():
    records = []
    for i in range(10):
        records.append(record(f"p{i}", "self_consistency", 4, True, tokens=400))
        records.append(record(f"p{i}", "adaptive", 4, True, tokens=100 if i < 5 else 400))
    (row,) = paired_against(records, "self_consistency")
    assert row.token_ratio.mean == pytest.approx(2500 / 4000)
    assert row.token_ratio.low < 0.625 < row.token_ratio.high < 1.0


def test_default_baseline_prefers_plain_self_consistency():
    assert default_baseline([record("p", "best_of_n", 1, True)]) == "best_of_n"
    both = [record("p", "best_of_n", 1, True), record("p", "self_consistency", 1, True)]
    assert default_baseline(both) == "self_consistency"
    assert default_baseline([]) is None


def test_report_of_a_partial_run_says_what_was_left_out(tmp_path):
    samples = [trace("18", 0, True), trace("20", 1, False)]
    write_run(tmp_path, [
        record("p1", "self_consistency", 2, True, samples),
        record("p1", "inverse_entropy", 2, True, samples),
        record("p2", "self_consistency", 2, True, samples),
    ])  # fmt: skip
    files = build_report(tmp_path, with_plots=False)
    text = files.report.read_text()
    assert "## gsm8k (1 problems)" in text
    assert "1 problem(s) not finished by every setting are left out." in text
    assert "| pass@k | 0.500 [0.500, 0.500] | 1.000 [1.000, 1.000] |" in text
    assert files.plots == []


def test_the_baseline_is_the_first_strategy_of_the_run_and_missing_settings_are_named(tmp_path):
    config = RunConfig(
        model="m", backend="in-process", prompt_template="{problem}", sampling=SamplingConfig()
    )
    open_run(tmp_path, config)
    grid = build_grid(
        ["inverse_entropy", "self_consistency", "best_of_n"], [1], SamplingConfig(), discover()
    )
    write_grid(tmp_path, grid)
    writer = RecordWriter(tmp_path)
    writer.write(record("p1", "inverse_entropy", 1, True))
    writer.write(record("p1", "self_consistency", 1, False))
    writer.close()
    text = build_report(tmp_path, with_plots=False).report.read_text()
    assert "### Paired differences against `inverse_entropy` at the same N" in text
    assert "| self_consistency@1 | inverse_entropy@1 | -1.000 [-1.000, -1.000] |" in text
    assert "Settings with no finished problem: best_of_n@1." in text


def test_replay_command_prints_the_curves_of_a_run_directory(tmp_path, capsys):
    write_run(tmp_path, [record("p1", "self_consistency", 5, True, three_right_two_wrong())])
    assert bench_main(["replay", str(tmp_path), "--k", "1,5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "pool: self_consistency@5 (1 problems)"
    assert any(line.split()[1:4] == ["majority", "k=5", "1.000"] for line in lines)
    assert any(line.split()[1:4] == ["inverse_entropy", "k=5", "0.000"] for line in lines)
    assert bench_main(["replay", str(tmp_path), "--k", "6"]) == 2
    assert "k=6 exceeds the smallest pool (5 samples)" in capsys.readouterr().err


def test_replay_pools_the_problems_of_several_run_directories(tmp_path, capsys):
    unanimous = [trace("1", 0, True, tokens=50)] * 8
    split = [trace("1", 0, True, tokens=50)] * 4 + [trace("2", 1, False, tokens=50)] * 4
    first = write_run(tmp_path / "a", [record("p1", "self_consistency", 8, True, unanimous)])
    second = write_run(tmp_path / "b", [record("p2", "self_consistency", 8, True, split)])
    argv = ["--adaptive", "--parallel", "1", "--confidence", "0.95"]
    assert bench_main(["replay", first, second, *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "pool: self_consistency@8 (2 problems, 8 samples each)"
    # fixed N=8: p1 right, p2 a 4-4 tie (half credit); 400 tokens each
    fixed = lines[3].split(" | ")
    assert fixed[0] == "| fixed N=8"
    assert fixed[1].startswith("0.750 ")
    assert fixed[3] == "400"
    again = write_run(tmp_path / "c", [record("p1", "self_consistency", 8, True, unanimous)])
    assert bench_main(["replay", first, again, *argv]) == 2
    assert "p1 (self_consistency@8) is recorded in both" in capsys.readouterr().err


def test_adaptive_replay_command_prints_one_row_per_schedule(tmp_path, capsys):
    unanimous = [trace("1", 0, True, tokens=50)] * 8
    write_run(tmp_path, [record("p1", "self_consistency", 8, True, unanimous)])
    argv = ["replay", str(tmp_path), "--adaptive", "--parallel", "2,8", "--confidence", "0.95"]
    assert bench_main([*argv, "--stopping", "beta,predictive"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "pool: self_consistency@8 (1 problems, 8 samples each)"
    rows = [line.split(" | ") for line in lines if line.startswith("| fixed") or "adaptive" in line]
    assert [r[0] for r in rows] == [
        "| fixed N=8",
        "| adaptive beta parallel=2 confidence=0.95",
        "| adaptive beta parallel=8 confidence=0.95",
        "| adaptive predictive parallel=2 confidence=0.95",
        "| adaptive predictive parallel=8 confidence=0.95",
    ]
    # unanimous: two at a time stop after 4 votes (200 tokens, 50% saved, in two sample
    # times); eight at a time have all finished by then, in one
    assert rows[1][3:] == ["200", "50.0%", "100 |"]
    assert rows[2][3:] == ["400", "0.0%", "50 |"]
    # the predictive rule stops after 3 of 8 (P = 0.960); the 4th, in flight, is billed
    assert rows[3][3:] == ["200", "50.0%", "100 |"]
    assert bench_main([*argv, "--hold-back"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if "back" in line]
    # holding back, eight in flight start only the three the vote needs: 150 tokens in
    # one sample time
    assert [r[0] for r in rows] == [
        "| adaptive predictive parallel=2 confidence=0.95 holding back",
        "| adaptive predictive parallel=8 confidence=0.95 holding back",
    ]
    assert rows[1][3:] == ["150", "62.5%", "50 |"]
    argv = ["replay", str(tmp_path), "--adaptive", "--parallel", "2", "--confidence", "0.95"]
    assert bench_main([*argv, "--min-samples", "3,5"]) == 0
    rows = [
        line.split(" | ") for line in capsys.readouterr().out.splitlines() if "adaptive" in line
    ]
    # with 5 votes needed the rule waits for the 5th (the 6th, in flight, is billed 50)
    assert [r[0] for r in rows] == [
        "| adaptive predictive parallel=2 confidence=0.95",
        "| adaptive predictive parallel=2 confidence=0.95 min_samples=5",
    ]
    assert [r[3] for r in rows] == ["200", "300"]
    with pytest.raises(SystemExit):  # a threshold of 0.4 would stop on a losing leader
        bench_main(["replay", str(tmp_path), "--adaptive", "--confidence", "0.4"])
    with pytest.raises(SystemExit):
        bench_main(["replay", str(tmp_path), "--adaptive", "--stopping", "bayes"])
