"""The numbers a run's report and its plots both show: per-setting summaries, paired
differences against a baseline and the cost/accuracy frontier. A module of its own so
that `report` and `plots` both depend on it rather than on each other.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttscale.strategies.registry import baseline, discover

from .datasets import BenchError
from .records import Record, read_records
from .stats import Interval, bootstrap_ci, paired_difference, paired_ratio


@dataclass(frozen=True)
class SummaryRow:
    """One setting on one dataset: accuracy with its interval and mean costs per problem."""

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
    reasoning_tokens: float = 0.0
    """Of `generated_tokens`, a reasoning model's thinking."""

    @property
    def answer_tokens(self) -> float:
        """Generated tokens that were not thinking: the answers."""
        return self.generated_tokens - self.reasoning_tokens


@dataclass(frozen=True)
class PairedRow:
    """One setting minus the baseline family at the same N, on the same problems."""

    dataset: str
    n: int
    setting: str
    baseline: str
    difference: Interval
    """Accuracy, setting minus baseline."""
    token_ratio: Interval
    """Generated tokens, setting over baseline (a ratio of totals)."""


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


def pooled_records(directories: Sequence[Path]) -> list[Record]:
    """The complete records (`complete_records`) of each run directory, pooled: one
    replay over problems recorded in several runs, e.g. one held-out set after another.
    Each directory is completed on its own, since runs may differ in their settings; a
    problem recorded under the same setting in two of them is refused, since pooling it
    would count it twice."""
    pooled: list[Record] = []
    seen: dict[tuple[str, str, str], Path] = {}
    for directory in directories:
        kept, _ = complete_records(read_records(directory))
        for record in kept:
            key = (record.dataset, record.problem_id, record.setting)
            if key in seen:
                raise BenchError(
                    f"{record.problem_id} ({record.setting}) is recorded in both "
                    f"{seen[key]} and {directory}: pool runs of different problems"
                )
            seen[key] = directory
        pooled.extend(kept)
    return pooled


def summarize(records: Sequence[Record]) -> list[SummaryRow]:
    """One row per (dataset, setting), in the order the report and plots list them."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        groups[(record.dataset, record.setting)].append(record)
    rows = [_summary_row(dataset, setting, group) for (dataset, setting), group in groups.items()]
    return sorted(rows, key=lambda r: (r.dataset, r.family, r.n))


def _summary_row(dataset: str, setting: str, group: Sequence[Record]) -> SummaryRow:
    first = group[0]
    return SummaryRow(
        dataset=dataset,
        setting=setting,
        family=first.family,
        strategy=first.strategy,
        n=first.n,
        problems=len(group),
        accuracy=bootstrap_ci([float(r.correct) for r in group]),
        generated_tokens=float(np.mean([r.generated_tokens for r in group])),
        reasoning_tokens=float(np.mean([r.reasoning_tokens for r in group])),
        verifier_tokens=float(np.mean([r.verifier_tokens for r in group])),
        tflops=float(np.mean([r.flops for r in group])) / 1e12,
        latency_s=float(np.mean([r.latency_s for r in group])),
        samples=float(np.mean([len(r.samples) for r in group])),
        stop_reasons=dict(Counter(r.stop_reason for r in group)),
    )


def default_baseline(records: Sequence[Record]) -> str | None:
    """For runs without a saved grid: plain self-consistency when the run has it (the
    usual baseline), else the family first in name order."""
    families = sorted({r.family for r in records})
    plain = baseline(discover())
    return plain if plain in families else next(iter(families), None)


def paired_against(records: Sequence[Record], baseline: str) -> list[PairedRow]:
    """Each family minus the baseline family at the same N, over the same problems."""
    outcome: dict[tuple[str, str], dict[str, Record]] = defaultdict(dict)
    meta: dict[str, tuple[str, int]] = {}
    for record in records:
        outcome[(record.dataset, record.setting)][record.problem_id] = record
        meta[record.setting] = (record.family, record.n)
    rows = []
    for (dataset, setting), mine in sorted(outcome.items()):
        family, n = meta[setting]
        base_label = f"{baseline}@{n}"
        theirs = outcome.get((dataset, base_label))
        if family == baseline or theirs is None:
            continue
        ids = sorted(mine.keys() & theirs.keys())
        difference = paired_difference(
            [float(mine[i].correct) for i in ids], [float(theirs[i].correct) for i in ids]
        )
        tokens = paired_ratio(
            [mine[i].generated_tokens for i in ids], [theirs[i].generated_tokens for i in ids]
        )
        rows.append(PairedRow(dataset, n, setting, base_label, difference, tokens))
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
