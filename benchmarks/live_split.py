"""Where a live adaptive run's accuracy change comes from: its stop rule, or redraws.

`bench run` of adaptive self-consistency beside fixed N, into one run directory, gives
both the same seeds; but a seeded sample repeats only when it is batched alike (bf16 on
a CPU), so the two runs vote on partly different samples. Replaying the adaptive rule
on the fixed run's own samples in seed order (the order one sample at a time draws
them) tells what the adaptive run would have answered without redraws: fixed against
that replay is the stop rule's part of the change, that replay against the live run is
the redraws' part.

    python -m ttscale.benchmarks.live_split --adaptive adaptive RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ttscale.strategies.self_consistency import SelfConsistencyParams, stop_rule
from ttscale.verifiers.aggregate import plurality

from .adaptive_replay import right_classes
from .records import Record, SampleTrace
from .summary import pooled_records


@dataclass(frozen=True)
class Split:
    """One problem: right under fixed N, under the rule on fixed N's samples, live."""

    problem_id: str
    fixed: bool
    rule_on_fixed_samples: bool
    live: bool
    rule_stopped_at: int


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


def split(records: Sequence[Record], adaptive: str, fixed: str = "self_consistency") -> list[Split]:
    """Every problem with both a `fixed` and an `adaptive` record (by family)."""
    by_problem: dict[tuple[str, str], dict[str, Record]] = {}
    for record in records:
        by_problem.setdefault((record.dataset, record.problem_id), {})[record.family] = record
    splits = []
    for (_, problem_id), families in sorted(by_problem.items()):
        if adaptive not in families or fixed not in families:
            continue
        live, base = families[adaptive], families[fixed]
        params = SelfConsistencyParams.model_validate(
            {k: v for k, v in live.params.items() if k != "sampling"}
        )
        right, used = rule_on_samples(base.samples, params)
        splits.append(Split(problem_id, base.correct, right, live.correct, used))
    return splits


def summary(splits: Sequence[Split]) -> str:
    n = len(splits)
    fixed = sum(s.fixed for s in splits)
    rule = sum(s.rule_on_fixed_samples for s in splits)
    live = sum(s.live for s in splits)
    lines = [
        f"{n} problems right: fixed {fixed}, the rule on fixed's samples {rule}, live {live}",
        f"stop rule: {rule - fixed:+d} problems; redraws: {live - rule:+d}",
    ]
    for s in splits:
        if len({s.fixed, s.rule_on_fixed_samples, s.live}) > 1:
            lines.append(
                f"  {s.problem_id}: fixed {s.fixed}, rule {s.rule_on_fixed_samples} "
                f"(stopped at {s.rule_stopped_at}), live {s.live}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="+", help="run directories")
    parser.add_argument("--adaptive", required=True, help="family of the adaptive setting")
    parser.add_argument("--fixed", default="self_consistency", help="family of fixed N")
    args = parser.parse_args(argv)
    print(summary(split(pooled_records(args.out), args.adaptive, args.fixed)))


if __name__ == "__main__":
    main()
