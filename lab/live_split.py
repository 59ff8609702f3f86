"""Where a live adaptive run's accuracy change comes from: its stop rule, or redraws.

`bench run` of adaptive self-consistency beside fixed N, into one run directory, gives
both the same seeds; but a seeded sample repeats only when it is batched alike (bf16 on
a CPU), so the two runs vote on partly different samples. Replaying the adaptive rule
on the fixed run's own samples in seed order (the order one sample at a time draws
them) tells what the adaptive run would have answered without redraws: fixed against
that replay is the stop rule's part of the change, that replay against the live run is
the redraws' part. It also prints what the live run cost against fixed N (generated
tokens, a ratio of totals) and its accuracy change, each with a bootstrap interval over
problems, pooled over the run directories given, and what the rule on the fixed run's
samples in seed order cost: a live run draws each problem once, in that order, so this,
not the replay's average over many orders, is what its tokens should match.

How large are redraws alone? `--again FAMILY` names fixed N drawn a second time (same
seeds, batched differently, e.g. another `--concurrency`): the problems that changed
between the two fixed runs are the noise floor of any live comparison, and the share of
same-seed samples that repeated tells how alike the two runs' samples were.

    python -m lab.live_split --adaptive adaptive [--again again] RUN_DIR ...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ttscale.benchmarks.adaptive_replay import right_classes
from ttscale.benchmarks.records import Record, SampleTrace
from ttscale.benchmarks.stats import paired_difference, paired_ratio
from ttscale.benchmarks.summary import pooled_records
from ttscale.strategies.self_consistency import SelfConsistencyParams, stop_rule
from ttscale.verifiers.aggregate import plurality


@dataclass(frozen=True)
class Split:
    """One problem: right under fixed N, under the rule on fixed N's samples, live."""

    problem_id: str
    fixed: bool
    rule_on_fixed_samples: bool
    live: bool
    rule_stopped_at: int
    live_repeats: Repeats
    fixed_tokens: int
    live_tokens: int
    """Generated tokens of each record, the live run's aborted partial samples included."""
    rule_tokens: int
    """Tokens of the fixed run's samples the rule voted on: what the live run would have
    cost had it drawn those samples one at a time."""


@dataclass(frozen=True)
class Repeats:
    """Of the samples two runs drew with the same seeds, how many came out alike: the same
    length and answer (token ids are not recorded)."""

    alike: int
    compared: int


@dataclass(frozen=True)
class Again:
    """One problem drawn twice under fixed N: right each time, and how alike."""

    problem_id: str
    first: bool
    second: bool
    repeats: Repeats


def rule_on_samples(
    samples: Sequence[SampleTrace], params: SelfConsistencyParams
) -> tuple[bool, int]:
    """(right?, samples used) of the adaptive rule voting on `samples` in their order."""
    labels: list[int | None] = []
    for seen, sample in enumerate(samples[: params.n], 1):
        labels.append(sample.answer_class)
        _, votes = plurality(labels)
        if stop_rule(votes, params, seen) is not None:
            break
    winner, _ = plurality(labels)
    return winner is not None and winner in right_classes(samples), len(labels)


def repeats(first: Record, second: Record) -> Repeats:
    """Compare two records' samples of the same seeds, paired by index (`_seed_indices`);
    samples whose seed cannot be told are not compared."""
    first_indices, second_indices = _seed_indices(first), _seed_indices(second)
    if first_indices is None or second_indices is None:
        return Repeats(0, 0)
    by_index = dict(zip(first_indices, first.samples, strict=True))
    pairs = [
        (by_index[i], s)
        for i, s in zip(second_indices, second.samples, strict=True)
        if i in by_index
    ]
    return Repeats(sum(a.tokens == b.tokens and a.answer == b.answer for a, b in pairs), len(pairs))


def _seed_indices(record: Record) -> list[int] | None:
    """Each sample's index (its seed is the request's plus it). Records made before indices
    were kept list samples in seed order, so a position is the index unless the run
    aborted samples in flight (an adaptive run may when it stops): then None."""
    indices = [s.index for s in record.samples if s.index is not None]
    if len(indices) == len(record.samples):
        return indices
    return list(range(len(record.samples))) if record.aborted_tokens == 0 else None


def _pairs(records: Sequence[Record], first: str, second: str) -> list[tuple[Record, Record]]:
    """(first, second) records of every problem that has both families, by problem."""
    by_problem: dict[tuple[str, str], dict[str, Record]] = {}
    for record in records:
        by_problem.setdefault((record.dataset, record.problem_id), {})[record.family] = record
    return [
        (families[first], families[second])
        for _, families in sorted(by_problem.items())
        if first in families and second in families
    ]


def split(records: Sequence[Record], adaptive: str, fixed: str = "self_consistency") -> list[Split]:
    """Every problem with both a `fixed` and an `adaptive` record (by family)."""
    splits = []
    for base, live in _pairs(records, fixed, adaptive):
        params = SelfConsistencyParams.model_validate(
            {k: v for k, v in live.params.items() if k != "sampling"}
        )
        right, used = rule_on_samples(base.samples, params)
        splits.append(
            Split(
                problem_id=base.problem_id,
                fixed=base.correct,
                rule_on_fixed_samples=right,
                live=live.correct,
                rule_stopped_at=used,
                live_repeats=repeats(base, live),
                fixed_tokens=base.generated_tokens,
                live_tokens=live.generated_tokens,
                rule_tokens=sum(sample.tokens for sample in base.samples[:used]),
            )
        )
    return splits


def drawn_again(
    records: Sequence[Record], again: str, fixed: str = "self_consistency"
) -> list[Again]:
    """Every problem with fixed N recorded under both families."""
    return [
        Again(first.problem_id, first.correct, second.correct, repeats(first, second))
        for first, second in _pairs(records, fixed, again)
    ]


def _alike(counts: Sequence[Repeats]) -> str:
    alike, compared = sum(r.alike for r in counts), sum(r.compared for r in counts)
    return f"{alike} of {compared} ({alike / max(compared, 1):.0%})"


def summary(splits: Sequence[Split]) -> str:
    n = len(splits)
    fixed = sum(s.fixed for s in splits)
    rule = sum(s.rule_on_fixed_samples for s in splits)
    live = sum(s.live for s in splits)
    lines = [
        f"{n} problems right: fixed {fixed}, the rule on fixed's samples {rule}, live {live}",
        f"stop rule: {rule - fixed:+d} problems; redraws: {live - rule:+d}",
        "same-seed samples alike (length and answer), fixed and live: "
        + _alike([s.live_repeats for s in splits]),
        *cost_and_change(splits),
    ]
    for s in splits:
        if len({s.fixed, s.rule_on_fixed_samples, s.live}) > 1:
            lines.append(
                f"  {s.problem_id}: fixed {s.fixed}, rule {s.rule_on_fixed_samples} "
                f"(stopped at {s.rule_stopped_at}), live {s.live}"
            )
    return "\n".join(lines)


def cost_and_change(splits: Sequence[Split]) -> list[str]:
    """Live against fixed N over the same problems: generated tokens per problem and their
    ratio of totals, and the change in accuracy, with bootstrap intervals over problems."""
    if not splits:
        return []
    live = [s.live_tokens for s in splits]
    fixed = [s.fixed_tokens for s in splits]
    rule = [s.rule_tokens for s in splits]
    ratio, rule_ratio = paired_ratio(live, fixed), paired_ratio(rule, fixed)
    change = paired_difference([float(s.live) for s in splits], [float(s.fixed) for s in splits])
    return [
        f"generated tokens per problem: live {sum(live) / len(live):,.0f}, fixed "
        f"{sum(fixed) / len(fixed):,.0f}; live / fixed {ratio.format()} "
        f"({1 - ratio.mean:.1%} fewer)",
        f"the rule on fixed's samples in seed order: {sum(rule) / len(rule):,.0f} per problem; "
        f"rule / fixed {rule_ratio.format()} ({1 - rule_ratio.mean:.1%} fewer)",
        f"accuracy change, live - fixed: {100 * change.mean:+.1f} points "
        f"[{100 * change.low:+.1f}, {100 * change.high:+.1f}]",
    ]


def again_summary(agains: Sequence[Again]) -> str:
    """The noise floor: fixed N against itself, drawn again."""
    won = sum(a.second and not a.first for a in agains)
    lost = sum(a.first and not a.second for a in agains)
    lines = [
        f"fixed drawn again, {len(agains)} problems right: first {sum(a.first for a in agains)}, "
        f"again {sum(a.second for a in agains)} ({won} won, {lost} lost)",
        "same-seed samples alike (length and answer): " + _alike([a.repeats for a in agains]),
    ]
    for a in agains:
        if a.first != a.second:
            lines.append(f"  {a.problem_id}: first {a.first}, again {a.second}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="+", help="run directories")
    parser.add_argument("--adaptive", required=True, help="family of the adaptive setting")
    parser.add_argument("--fixed", default="self_consistency", help="family of fixed N")
    parser.add_argument("--again", help="family of fixed N drawn a second time")
    args = parser.parse_args(argv)
    records = pooled_records(args.out)
    print(summary(split(records, args.adaptive, args.fixed)))
    if args.again:
        print(again_summary(drawn_again(records, args.again, args.fixed)))


if __name__ == "__main__":
    main()
