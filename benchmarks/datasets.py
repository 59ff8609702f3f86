"""The vendored benchmark datasets and the subsets a run asks for.

Each file in `data/` is JSONL with at least `id`, `problem` and `answer` (MATH-500 adds
`level` and `subject`); `data/PROVENANCE.md` says where each came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DATA_DIR = Path(__file__).parent / "data"
DATASETS = {
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
    "math500": "math500.jsonl",
    "gsm8k": "gsm8k.jsonl",
}


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
    path = data_dir / DATASETS[name]
    with path.open(encoding="utf-8") as lines:
        return [Problem(dataset=name, **json.loads(line)) for line in lines if line.strip()]


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
