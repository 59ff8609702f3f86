"""PNG plots of a benchmark run (matplotlib, headless)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from .replay import ReplayPoint
from .summary import SummaryRow

COSTS = (
    ("generated_tokens", "generated tokens per problem"),
    ("tflops", "TFLOPs per problem (estimate)"),
    ("latency_s", "wall time per problem (s)"),
)
THINKING_COSTS = (
    ("reasoning_tokens", "thinking tokens per problem"),
    ("answer_tokens", "answer tokens per problem"),
)
"""Beside the costs, for runs of a reasoning model: the generated tokens split into
thinking and answers, each a compute axis of its own."""


PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
"""Log axes labelled 300, 1000 rather than 3x10^2, 10^3."""


def _plain_ticks(axis) -> None:
    axis.xaxis.set_major_formatter(PLAIN)
    axis.xaxis.set_minor_formatter(PLAIN)


def _error_bars(points: Sequence[tuple[float, float, float]]) -> list[list[float]]:
    return [[m - lo for m, lo, _ in points], [hi - m for m, _, hi in points]]


def plot_compute(rows: Sequence[SummaryRow], path: Path, title: str) -> None:
    """Accuracy against each cost, one line per strategy family across budgets N."""
    families: dict[str, list[SummaryRow]] = defaultdict(list)
    for row in rows:
        families[row.family].append(row)
    thinking = any(r.reasoning_tokens for r in rows)
    costs = COSTS + THINKING_COSTS if thinking else COSTS
    figure, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 4), sharey=True)
    for axis, (cost, label) in zip(axes, costs, strict=True):
        for place, (family, members) in enumerate(families.items()):
            members = sorted(members, key=lambda r: r.n)
            xs = [getattr(r, cost) for r in members]
            intervals = [(r.accuracy.mean, r.accuracy.low, r.accuracy.high) for r in members]
            axis.errorbar(
                xs, [m for m, _, _ in intervals], yerr=_error_bars(intervals),
                marker="o", capsize=3, label=family,
            )  # fmt: skip
            for row, x in zip(members, xs, strict=True):
                axis.annotate(
                    f"N={row.n}",
                    (x, row.accuracy.mean),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3 + 9 * place),
                )  # labels of each family on their own row
        if min((getattr(r, cost) for r in rows), default=0) > 0:
            axis.set_xscale("log")
            _plain_ticks(axis)
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (95% bootstrap CI)")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{title}: accuracy vs compute ({rows[0].problems} problems)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_replay(points: Sequence[ReplayPoint], path: Path, title: str) -> None:
    """Rule accuracy against k, from one recorded pool: pass@k bounds every rule."""
    methods: dict[str, list[ReplayPoint]] = defaultdict(list)
    for point in points:
        methods[point.method].append(point)
    figure, axis = plt.subplots(figsize=(6, 4))
    for method, members in methods.items():
        members = sorted(members, key=lambda p: p.k)
        intervals = [(p.accuracy.mean, p.accuracy.low, p.accuracy.high) for p in members]
        axis.errorbar(
            [p.k for p in members], [m for m, _, _ in intervals], yerr=_error_bars(intervals),
            marker="o", capsize=3, label=method, linestyle="--" if method == "pass@k" else "-",
        )  # fmt: skip
    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_formatter(PLAIN)
    axis.set_xlabel("k (samples)")
    axis.set_ylabel("accuracy (95% bootstrap CI)")
    axis.set_title(f"{title}: replay of {points[0].pool} ({points[0].problems} problems)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
