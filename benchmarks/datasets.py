"""The vendored benchmark datasets and the subsets a run asks for.

Each file in `data/` is JSONL with at least `id`, `problem` and `answer` (MATH-500 adds
`level` and `subject`; a multiple-choice dataset adds `choices`, its answer the option's
letter); `data/PROVENANCE.md` says where each came from. Each dataset declares how its
answers are read and graded and the prompt that asks for them (`Dataset`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, model_validator

from ttscale.verifiers.structured import AnswerFormat

DATA_DIR = Path(__file__).parent / "data"

MATH_PROMPT = (
    "Solve the following math problem step by step. Put the final answer in \\boxed{}.\n\n{problem}"
)
CHOICE_PROMPT = (
    "Answer the following multiple-choice question.\n\n{problem}\n\n"
    "Answer with the letter of the correct option only."
)
LETTERS = AnswerFormat(kind="choice", options=("A", "B", "C", "D"))
"""Four options lettered A to D, the answer one letter: graded by exact equality."""


class Dataset(BaseModel):
    """One vendored dataset: its file, how its answers are read and graded, and the
    prompt that asks for them (`{problem}` is the problem with its lettered options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    answer_format: AnswerFormat | None = None
    """None: math answers, the strategies' own default (the last `\\boxed{}`), graded by
    math equivalence; a format: every setting reads answers so (unless its spec sets
    `answer` itself) and a pick is right when it equals the gold answer exactly."""
    prompt_template: str = MATH_PROMPT


DATASETS: Mapping[str, Dataset] = MappingProxyType(
    {
        "aime24": Dataset(file="aime24.jsonl"),
        "aime25": Dataset(file="aime25.jsonl"),
        "amc23": Dataset(file="amc23.jsonl"),
        "math500": Dataset(file="math500.jsonl"),
        "gsm8k": Dataset(file="gsm8k.jsonl"),
        "mmlu-elementary-math": Dataset(
            file="mmlu_elementary_math.jsonl", answer_format=LETTERS, prompt_template=CHOICE_PROMPT
        ),
    }
)


class BenchError(Exception):
    """A problem with the benchmark's inputs the user can fix, reported as one line."""


class Problem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    dataset: str
    id: str
    problem: str
    answer: str
    level: int | None = None
    subject: str | None = None
    choices: tuple[str, ...] = ()
    """A multiple-choice problem's options, labelled in order by its format's options."""
    answer_format: AnswerFormat | None = None
    """Its dataset's declaration (`Dataset.answer_format`): None for math answers."""
    prompt_template: str = MATH_PROMPT

    @model_validator(mode="after")
    def _one_option_per_label(self) -> Problem:
        """A choice problem has one option per label, and its gold answer is a label."""
        labels = self.labels
        if labels and len(self.choices) != len(labels):
            raise ValueError(f"{self.id}: {len(self.choices)} choices for {len(labels)} labels")
        if labels and self.answer not in labels:
            raise ValueError(f"{self.id}: the answer {self.answer!r} is not one of {labels}")
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        """The option labels of a multiple-choice problem (A, B, ...); empty otherwise."""
        fmt = self.answer_format
        return (fmt.options or ()) if fmt is not None and fmt.kind == "choice" else ()

    @property
    def text(self) -> str:
        """What `{problem}` stands for in a prompt: the problem, then each labelled option
        on a line of its own (`A. ...`) for a multiple-choice problem."""
        if not self.labels:
            return self.problem
        pairs = zip(self.labels, self.choices, strict=True)
        options = "\n".join(f"{label}. {choice}" for label, choice in pairs)
        return f"{self.problem}\n\n{options}"


@dataclass(frozen=True)
class Selection:
    """Which problems of a dataset to run; empty fields select everything."""

    limit: int | None = None
    ids: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    subjects: tuple[str, ...] = ()


def load_dataset(name: str, data_dir: Path = DATA_DIR) -> list[Problem]:
    if name not in DATASETS:
        raise BenchError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    declared = {"answer_format": spec.answer_format, "prompt_template": spec.prompt_template}
    with (data_dir / spec.file).open(encoding="utf-8") as lines:
        return [
            Problem(dataset=name, **json.loads(line), **declared) for line in lines if line.strip()
        ]


def select(problems: Sequence[Problem], selection: Selection) -> list[Problem]:
    """Filter one dataset by ids, MATH level and subject (case-insensitive), then take
    the first `limit`. Level and subject filters pass a dataset without levels through
    untouched (`load_problems` checks that some dataset has them)."""
    chosen = list(problems)
    if selection.ids:
        wanted = set(selection.ids)
        chosen = [p for p in chosen if p.id in wanted]
    has_levels = any(p.level is not None for p in chosen)
    if selection.levels and has_levels:
        chosen = [p for p in chosen if p.level in selection.levels]
    if selection.subjects and has_levels:
        wanted_subjects = {s.casefold() for s in selection.subjects}
        chosen = [p for p in chosen if (p.subject or "").casefold() in wanted_subjects]
    if selection.limit is not None:
        chosen = chosen[: selection.limit]
    return chosen


def load_problems(names: Sequence[str], selection: Selection) -> list[Problem]:
    """Problems of every named dataset, each filtered by the same selection. Ids that
    match no dataset and filters that select nothing are errors: a typo should not
    quietly shrink a run."""
    datasets = {name: load_dataset(name) for name in dict.fromkeys(names)}
    every = [p for problems in datasets.values() for p in problems]
    if selection.ids:
        known = {p.id for p in every}
        missing = [i for i in selection.ids if i not in known]
        if missing:
            raise BenchError(f"unknown problem ids: {', '.join(missing[:5])}")
    if (selection.levels or selection.subjects) and all(p.level is None for p in every):
        raise BenchError("--level and --subject apply to MATH-500 only")
    chosen = [p for problems in datasets.values() for p in select(problems, selection)]
    if not chosen:
        raise BenchError("the filters select no problems")
    return chosen
