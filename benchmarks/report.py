"""From records to conclusions: summary table, compute-matched comparison, replay
curves, CSV, Markdown and plots. Pure over the run directory, so `ttscale bench report`
can rebuild everything from `records.jsonl` at any time (an interrupted run included).
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .records import Record, RunConfig, read_grid, read_records, read_run_config
from .replay import ReplayPoint, replay
from .stats import Interval, bootstrap_ci, paired_difference

SUMMARY_CSV = "summary.csv"
REPLAY_CSV = "replay.csv"
REPORT_MD = "report.md"
PLOTS = "plots"


@dataclass(frozen=True)
class SummaryRow:
    dataset: str
    setting: str
    family: str
    strategy: str
    n: int
    problems: int
    accuracy: Interval
    generated_tokens: float
    verifier_tokens: float
    tflops: float
    latency_s: float
    samples: float
    stop_reasons: dict[str, int]


@dataclass(frozen=True)
class PairedRow:
    dataset: str
    n: int
    setting: str
    baseline: str
    difference: Interval


def complete_records(records: Sequence[Record]) -> tuple[list[Record], dict[str, int]]:
    """Records of the problems every setting of their dataset finished (so every
    comparison is on the same problems), and how many problems were left out."""
    settings: dict[str, set[str]] = defaultdict(set)
    done: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in records:
        settings[record.dataset].add(record.setting)
        done[(record.dataset, record.problem_id)].add(record.setting)
    complete = {key for key, seen in done.items() if seen == settings[key[0]]}
    left_out = Counter(dataset for (dataset, _), _ in done.items()) - Counter(
        dataset for dataset, _ in complete
    )
    kept = [r for r in records if (r.dataset, r.problem_id) in complete]
    return kept, {dataset: left_out.get(dataset, 0) for dataset in settings}


def summarize(records: Sequence[Record]) -> list[SummaryRow]:
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        groups[(record.dataset, record.setting)].append(record)
    rows = []
    for (dataset, setting), group in groups.items():
        first = group[0]
        rows.append(
            SummaryRow(
                dataset=dataset,
                setting=setting,
                family=first.family,
                strategy=first.strategy,
                n=first.n,
                problems=len(group),
                accuracy=bootstrap_ci([float(r.correct) for r in group]),
                generated_tokens=float(np.mean([r.generated_tokens for r in group])),
                verifier_tokens=float(np.mean([r.verifier_tokens for r in group])),
                tflops=float(np.mean([r.flops for r in group])) / 1e12,
                latency_s=float(np.mean([r.latency_s for r in group])),
                samples=float(np.mean([len(r.samples) for r in group])),
                stop_reasons=dict(Counter(r.stop_reason for r in group)),
            )
        )
    return sorted(rows, key=lambda r: (r.dataset, r.family, r.n))


def default_baseline(records: Sequence[Record]) -> str | None:
    """For runs without a saved grid: plain self-consistency when the run has it (the
    usual baseline), else the family first in name order."""
    families = sorted({r.family for r in records})
    return "self_consistency" if "self_consistency" in families else next(iter(families), None)


def paired_against(records: Sequence[Record], baseline: str) -> list[PairedRow]:
    """Each family minus the baseline family at the same N, over the same problems."""
    outcome: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    meta: dict[str, tuple[str, int]] = {}
    for record in records:
        outcome[(record.dataset, record.setting)][record.problem_id] = float(record.correct)
        meta[record.setting] = (record.family, record.n)
    rows = []
    for (dataset, setting), mine in sorted(outcome.items()):
        family, n = meta[setting]
        base_label = f"{baseline}@{n}"
        theirs = outcome.get((dataset, base_label))
        if family == baseline or theirs is None:
            continue
        ids = sorted(mine.keys() & theirs.keys())
        difference = paired_difference([mine[i] for i in ids], [theirs[i] for i in ids])
        rows.append(PairedRow(dataset, n, setting, base_label, difference))
    return rows


def frontier(rows: Sequence[SummaryRow], cost: str) -> set[str]:
    """Settings no other setting dominates (per dataset): none is at least as accurate
    for no more cost and strictly better on one of the two."""
    best: set[str] = set()
    for row in rows:
        mine, accuracy = getattr(row, cost), row.accuracy.mean
        dominated = any(
            other.dataset == row.dataset
            and getattr(other, cost) <= mine
            and other.accuracy.mean >= accuracy
            and (getattr(other, cost) < mine or other.accuracy.mean > accuracy)
            for other in rows
        )
        if not dominated:
            best.add(f"{row.dataset}/{row.setting}")
    return best


def write_summary_csv(rows: Sequence[SummaryRow], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            "dataset setting strategy n problems accuracy ci_low ci_high generated_tokens "
            "verifier_tokens tflops latency_s samples stop_reasons".split()
        )
        for r in rows:
            writer.writerow(
                [
                    r.dataset, r.setting, r.strategy, r.n, r.problems,
                    f"{r.accuracy.mean:.4f}", f"{r.accuracy.low:.4f}", f"{r.accuracy.high:.4f}",
                    f"{r.generated_tokens:.1f}", f"{r.verifier_tokens:.1f}", f"{r.tflops:.4f}",
                    f"{r.latency_s:.2f}", f"{r.samples:.2f}",
                    " ".join(f"{k}={v}" for k, v in sorted(r.stop_reasons.items())),
                ]
            )  # fmt: skip


def write_replay_csv(points: Sequence[ReplayPoint], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            "dataset pool method k problems accuracy ci_low ci_high generated_tokens tflops".split()
        )
        for p in points:
            writer.writerow(
                [
                    p.dataset, p.pool, p.method, p.k, p.problems, f"{p.accuracy.mean:.4f}",
                    f"{p.accuracy.low:.4f}", f"{p.accuracy.high:.4f}",
                    f"{p.generated_tokens:.1f}", f"{p.tflops:.4f}",
                ]
            )  # fmt: skip


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(
    config: RunConfig,
    rows: Sequence[SummaryRow],
    paired: Sequence[PairedRow],
    points: Sequence[ReplayPoint],
    left_out: dict[str, int],
    plots: dict[str, list[str]],
    baseline: str | None,
    never_finished: Sequence[str] = (),
) -> str:
    sampling = config.sampling
    lines = [
        "# Benchmark report",
        "",
        f"- model: `{config.model}` ({config.backend}"
        + (f", {config.model_source})" if config.model_source else ")"),
        f"- sampling: temperature {sampling.temperature}, top_p {sampling.top_p}, "
        f"max_tokens {sampling.max_tokens} per sample, base seed {sampling.seed}",
        "- budget: a setting may generate at most (samples it draws) x max_tokens tokens per "
        "problem (N x max_tokens for best_of_n, self_consistency, inverse_entropy)",
        "- accuracy: share of problems whose final answer is mathematically equivalent to "
        "the reference (math-verify); 95% percentile-bootstrap intervals over problems",
        "- costs are means per problem; TFLOPs are estimates (2 x params x tokens plus "
        "attention, policy and verifier)",
        "",
        "Prompt template:",
        "",
        "```",
        config.prompt_template,
        "```",
    ]
    if never_finished:
        lines += ["", f"Settings with no finished problem: {', '.join(never_finished)}."]
    tokens_best, flops_best, time_best = (
        frontier(rows, c) for c in ("generated_tokens", "tflops", "latency_s")
    )
    for dataset in sorted({r.dataset for r in rows}):
        mine = [r for r in rows if r.dataset == dataset]
        lines += ["", f"## {dataset} ({mine[0].problems} problems)"]
        if left_out.get(dataset):
            lines.append(
                f"\n{left_out[dataset]} problem(s) not finished by every setting are left out."
            )
        lines += ["", "### Accuracy and cost per setting", ""]
        body = []
        for r in sorted(mine, key=lambda r: r.generated_tokens):
            key = f"{dataset}/{r.setting}"
            marks = "".join(
                mark
                for mark, best in (("T", tokens_best), ("F", flops_best), ("W", time_best))
                if key in best
            )
            body.append(
                [
                    r.setting, str(r.n), r.accuracy.format(), f"{r.generated_tokens:.0f}",
                    f"{r.verifier_tokens:.0f}", f"{r.tflops:.3f}", f"{r.latency_s:.1f}",
                    f"{r.samples:.1f}",
                    ", ".join(f"{k} {v}" for k, v in sorted(r.stop_reasons.items())), marks,
                ]
            )  # fmt: skip
        lines += _table(
            ["setting", "N", "accuracy [95% CI]", "generated tok", "verifier tok", "TFLOPs",
             "seconds", "samples", "stop reasons", "frontier"],
            body,
        )  # fmt: skip
        lines += [
            "",
            "Rows are sorted by generated tokens. frontier: no other setting is at least as "
            "accurate for no more generated tokens (T), FLOPs (F) or wall time (W) while "
            "better on one of the two.",
        ]
        mine_paired = [p for p in paired if p.dataset == dataset]
        if mine_paired and baseline:
            lines += ["", f"### Paired differences against `{baseline}` at the same N", ""]
            lines += _table(
                ["setting", "baseline", "accuracy difference [95% CI]"],
                [[p.setting, p.baseline, p.difference.format()] for p in mine_paired],
            )
        mine_points = [p for p in points if p.dataset == dataset]
        if mine_points:
            ks = sorted({p.k for p in mine_points})
            methods = list(dict.fromkeys(p.method for p in mine_points))
            by = {(p.method, p.k): p for p in mine_points}
            lines += [
                "",
                f"### Replay: rules at k samples, from the samples of `{mine_points[0].pool}`",
                "",
                "pass@k is coverage (unbiased estimator); the other rows average each rule "
                "over k-subsets of the recorded samples, ties split evenly.",
                "",
            ]
            rows_md = [[m] + [by[(m, k)].accuracy.format() for k in ks] for m in methods]
            rows_md.append(
                ["generated tok"] + [f"{by[(methods[0], k)].generated_tokens:.0f}" for k in ks]
            )
            lines += _table(["rule"] + [f"k={k}" for k in ks], rows_md)
        for image in plots.get(dataset, []):
            lines += ["", f"![{Path(image).stem}]({image})"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReportFiles:
    report: Path
    summary: Path
    replay: Path | None
    plots: list[Path]


def build_report(
    out_dir: Path,
    *,
    baseline: str | None = None,
    pool: str | None = None,
    ks: Sequence[int] | None = None,
    draws: int = 500,
    with_plots: bool = True,
) -> ReportFiles:
    config = read_run_config(out_dir)
    everything = read_records(out_dir)
    records, left_out = complete_records(everything)
    rows = summarize(records)
    grid = read_grid(out_dir)
    baseline = baseline or (grid[0].family if grid else default_baseline(records))
    recorded = {r.setting for r in everything}
    never = [entry.label for entry in grid if entry.label not in recorded]
    paired = paired_against(records, baseline) if baseline else []
    points = replay(records, pool=pool, ks=ks, draws=draws) if records else []
    summary_path = out_dir / SUMMARY_CSV
    write_summary_csv(rows, summary_path)
    replay_path = out_dir / REPLAY_CSV if points else None
    if replay_path:
        write_replay_csv(points, replay_path)
    plot_paths: dict[str, list[str]] = {}
    written: list[Path] = []
    if with_plots and rows:
        from .plots import plot_compute, plot_replay

        (out_dir / PLOTS).mkdir(exist_ok=True)
        for dataset in sorted({r.dataset for r in rows}):
            compute = out_dir / PLOTS / f"{dataset}_compute.png"
            plot_compute([r for r in rows if r.dataset == dataset], compute, dataset)
            made = [compute]
            mine = [p for p in points if p.dataset == dataset]
            if mine:
                curve = out_dir / PLOTS / f"{dataset}_replay.png"
                plot_replay(mine, curve, dataset)
                made.append(curve)
            written += made
            plot_paths[dataset] = [str(p.relative_to(out_dir)) for p in made]
    report_path = out_dir / REPORT_MD
    report_path.write_text(
        markdown(config, rows, paired, points, left_out, plot_paths, baseline, never)
    )
    return ReportFiles(report_path, summary_path, replay_path, written)
