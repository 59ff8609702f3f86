"""From records to conclusions: summary table, compute-matched comparison, replay
curves, CSV, Markdown and plots. Pure over the run directory, so `ttscale bench report`
can rebuild everything from `records.jsonl` at any time (an interrupted run included).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .datasets import DATASETS
from .plots import plot_compute, plot_replay
from .records import RunConfig, read_grid, read_records, read_run_config
from .replay import ReplayPoint, replay
from .summary import (
    PairedRow,
    SummaryRow,
    complete_records,
    default_baseline,
    frontier,
    paired_against,
    summarize,
)

SUMMARY_CSV = "summary.csv"
REPLAY_CSV = "replay.csv"
REPORT_MD = "report.md"
PLOTS = "plots"

FRONTIER_MARKS = (("T", "generated_tokens"), ("F", "tflops"), ("W", "latency_s"))
"""The letter the settings table shows for a setting on the frontier of each cost."""


def write_summary_csv(rows: Sequence[SummaryRow], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            "dataset setting strategy n problems accuracy ci_low ci_high generated_tokens "
            "reasoning_tokens "
            "verifier_tokens tflops latency_s samples stop_reasons".split()
        )
        for r in rows:
            writer.writerow(
                [
                    r.dataset, r.setting, r.strategy, r.n, r.problems,
                    f"{r.accuracy.mean:.4f}", f"{r.accuracy.low:.4f}", f"{r.accuracy.high:.4f}",
                    f"{r.generated_tokens:.1f}", f"{r.reasoning_tokens:.1f}",
                    f"{r.verifier_tokens:.1f}", f"{r.tflops:.4f}",
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
    """The whole report: the run's setup, then one section per dataset."""
    marks = _frontier_marks(rows)
    datasets = sorted({r.dataset for r in rows})
    lines = _run_header(config, datasets) + _never_finished_note(never_finished)
    for dataset in datasets:
        mine = [r for r in rows if r.dataset == dataset]
        lines += _dataset_heading(dataset, mine[0].problems, left_out.get(dataset, 0))
        lines += _settings_table(mine, marks)
        lines += _paired_section([p for p in paired if p.dataset == dataset], baseline)
        lines += _replay_section([p for p in points if p.dataset == dataset])
        lines += _plot_links(plots.get(dataset, []))
    return "\n".join(lines) + "\n"


def _run_header(config: RunConfig, datasets: Sequence[str] = ()) -> list[str]:
    """What was run and how to read the numbers: model, sampling, budget, grading,
    prompt."""
    sampling = config.sampling
    constrained = ", samples constrained to the options" if sampling.constrain_choices else ""
    return [
        "# Benchmark report",
        "",
        f"- model: `{config.model}` ("
        + ", ".join(filter(None, [config.backend, config.model_source, config.dtype]))
        + ")",
        f"- sampling: temperature {sampling.temperature}, top_p {sampling.top_p}, "
        f"max_tokens {sampling.max_tokens} per sample, base seed {sampling.seed}{constrained}",
        "- budget: a setting may generate at most (samples it draws) x max_tokens tokens per "
        "problem (N x max_tokens for best_of_n, self_consistency, inverse_entropy)",
        _accuracy_line(datasets),
        "- costs are means per problem; TFLOPs are estimates (2 x params x tokens plus "
        "attention, policy and verifier)",
        *_prompt_lines(config.prompt_template),
    ]


def _accuracy_line(datasets: Sequence[str]) -> str:
    """How a pick is graded: math equivalence, and exact equality for the datasets that
    declare a structured answer (an option's letter)."""
    exact = [d for d in datasets if (spec := DATASETS.get(d)) and spec.answer_format]
    intervals = "95% percentile-bootstrap intervals over problems"
    if not exact:
        return (
            "- accuracy: share of problems whose final answer is mathematically equivalent to "
            f"the reference (math-verify); {intervals}"
        )
    names = ", ".join(f"`{d}`" for d in exact)
    exactly = f"whose picked answer (an option's letter) equals the reference exactly ({names})"
    if len(exact) == len(datasets):
        return f"- accuracy: share of problems {exactly}; {intervals}"
    return (
        "- accuracy: share of problems whose final answer is mathematically equivalent to "
        f"the reference (math-verify), or, for structured answers, {exactly}; {intervals}"
    )


def _prompt_lines(template: str | dict[str, str]) -> list[str]:
    """The prompt template, or each dataset's where they differ."""
    if isinstance(template, str):
        return ["", "Prompt template:", "", "```", template, "```"]
    lines = ["", "Prompt templates:"]
    for dataset, text in sorted(template.items()):
        lines += ["", f"`{dataset}`:", "", "```", text, "```"]
    return lines


def _never_finished_note(never_finished: Sequence[str]) -> list[str]:
    """Grid settings absent from every table, named so they are not silently missing."""
    if not never_finished:
        return []
    return ["", f"Settings with no finished problem: {', '.join(never_finished)}."]


def _frontier_marks(rows: Sequence[SummaryRow]) -> dict[str, str]:
    """For each `dataset/setting`, the letters of the costs whose frontier it is on."""
    best = [(mark, frontier(rows, cost)) for mark, cost in FRONTIER_MARKS]
    keys = (f"{r.dataset}/{r.setting}" for r in rows)
    return {key: "".join(mark for mark, on in best if key in on) for key in keys}


def _dataset_heading(dataset: str, problems: int, left_out: int) -> list[str]:
    """The dataset's title, and how many unfinished problems its comparisons leave out."""
    lines = ["", f"## {dataset} ({problems} problems)"]
    if left_out:
        lines.append(f"\n{left_out} problem(s) not finished by every setting are left out.")
    return lines


def _settings_table(rows: Sequence[SummaryRow], marks: dict[str, str]) -> list[str]:
    """Accuracy and cost of each setting of one dataset, cheapest first."""
    body = [
        [
            r.setting, str(r.n), r.accuracy.format(), f"{r.generated_tokens:.0f}",
            f"{r.verifier_tokens:.0f}", f"{r.tflops:.3f}", f"{r.latency_s:.1f}",
            f"{r.samples:.1f}", ", ".join(f"{k} {v}" for k, v in sorted(r.stop_reasons.items())),
            marks[f"{r.dataset}/{r.setting}"],
        ]
        for r in sorted(rows, key=lambda r: r.generated_tokens)
    ]  # fmt: skip
    table = _table(
        ["setting", "N", "accuracy [95% CI]", "generated tok", "verifier tok", "TFLOPs",
         "seconds", "samples", "stop reasons", "frontier"],
        body,
    )  # fmt: skip
    return [
        "",
        "### Accuracy and cost per setting",
        "",
        *table,
        "",
        "Rows are sorted by generated tokens. frontier: no other setting is at least as "
        "accurate for no more generated tokens (T), FLOPs (F) or wall time (W) while "
        "better on one of the two.",
    ]


def _paired_section(paired: Sequence[PairedRow], baseline: str | None) -> list[str]:
    """Each setting of one dataset against the baseline at the same N, if there is one."""
    if not (paired and baseline):
        return []
    return [
        "",
        f"### Paired differences against `{baseline}` at the same N",
        "",
        *_table(
            [
                "setting",
                "baseline",
                "accuracy difference [95% CI]",
                "generated tokens / baseline's [95% CI]",
            ],
            [
                [p.setting, p.baseline, p.difference.format(), p.token_ratio.format()]
                for p in paired
            ],
        ),
    ]


def _replay_section(points: Sequence[ReplayPoint]) -> list[str]:
    """Each selection rule's accuracy at k samples of one dataset's pool, if replayed."""
    if not points:
        return []
    ks = sorted({p.k for p in points})
    methods = list(dict.fromkeys(p.method for p in points))
    by = {(p.method, p.k): p for p in points}
    rows = [[m] + [by[(m, k)].accuracy.format() for k in ks] for m in methods]
    rows.append(["generated tok"] + [f"{by[(methods[0], k)].generated_tokens:.0f}" for k in ks])
    return [
        "",
        f"### Replay: rules at k samples, from the samples of `{points[0].pool}`",
        "",
        "pass@k is coverage (unbiased estimator); the other rows average each rule "
        "over k-subsets of the recorded samples, ties split evenly.",
        "",
        *_table(["rule"] + [f"k={k}" for k in ks], rows),
    ]


def _plot_links(images: Sequence[str]) -> list[str]:
    """The dataset's plots, embedded by their path relative to the report."""
    lines: list[str] = []
    for image in images:
        lines += ["", f"![{Path(image).stem}]({image})"]
    return lines


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
    plot_paths, written = _write_plots(out_dir, rows, points) if with_plots and rows else ({}, [])
    report_path = out_dir / REPORT_MD
    report_path.write_text(
        markdown(config, rows, paired, points, left_out, plot_paths, baseline, never)
    )
    return ReportFiles(report_path, summary_path, replay_path, written)


def _write_plots(
    out_dir: Path, rows: Sequence[SummaryRow], points: Sequence[ReplayPoint]
) -> tuple[dict[str, list[str]], list[Path]]:
    """Each dataset's compute plot (and replay plot, if replayed) under `plots/`; returns
    the report-relative paths per dataset and every file written."""
    (out_dir / PLOTS).mkdir(exist_ok=True)
    plot_paths: dict[str, list[str]] = {}
    written: list[Path] = []
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
    return plot_paths, written
