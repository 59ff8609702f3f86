"""Answer classes, vote tables and picks: the one home of the helpers every voting
strategy shares (the vote rules themselves are `ttscale.verifiers.aggregate`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ttscale.verifiers.math_grader import MathGrader
from ttscale.verifiers.structured import AnswerFormat, exact_classes

from .base import Candidate


async def group_answers(
    grader: MathGrader, answers: Sequence[str | None], answer_format: AnswerFormat
) -> list[int | None]:
    """Vote-class id per answer (None: no answer): by math equivalence on the grader's
    workers for boxed answers, by exact equality of the canonical answers for every
    other kind (a JSON value, a match, an option or a tool call is not a formula)."""
    if answer_format.by_math:
        return await grader.group(answers)
    return exact_classes(answers)


async def label_answers(
    grader: MathGrader, candidates: Sequence[Candidate], answer_format: AnswerFormat
) -> list[int | None]:
    """Group the candidates' answers (`group_answers`) and record each one's class."""
    labels = await group_answers(grader, [c.answer for c in candidates], answer_format)
    for candidate, label in zip(candidates, labels, strict=True):
        candidate.answer_class = label
    return labels


def class_spelling(
    answers: Sequence[str | None], labels: Sequence[int | None], label: int | None
) -> str | None:
    """How a class is written in tables: the answer of its first member."""
    if label is None:
        return None
    return next((a for a, lab in zip(answers, labels, strict=True) if lab == label), None)


def vote_table(
    answers: Sequence[str | None], labels: Sequence[int | None], totals: dict[int, float]
) -> dict[str, float]:
    """Class totals keyed by each class's first-seen answer spelling."""
    table: dict[str, float] = {}
    for label, value in totals.items():
        spelling = class_spelling(answers, labels, label)
        if spelling is not None:
            table[spelling] = round(value, 6)
    return table


def candidate_votes(candidates: Sequence[Candidate], totals: dict[int, float]) -> dict[str, float]:
    """`vote_table` of labelled candidates."""
    return vote_table([c.answer for c in candidates], [c.answer_class for c in candidates], totals)


def pick_member(
    candidates: Sequence[Candidate],
    label: int | None,
    key: Callable[[int], float] | None = None,
) -> int | None:
    """Position of the winning class's representative: the member with the largest
    `key(position)` (the first one on ties, or when there is no key); None: no class."""
    members = [i for i, c in enumerate(candidates) if label is not None and c.answer_class == label]
    if not members:
        return None
    if key is None:
        return members[0]
    return max(members, key=lambda i: (key(i), -i))
