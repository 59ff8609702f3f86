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
    """Filter by ids, MATH level and subject (case-insensitive), then take the first
    `limit`. Ids that match nothing are an error: a typo should not shrink a run."""
    chosen = list(problems)
    if selection.ids:
        known = {p.id for p in chosen}
        missing = [i for i in selection.ids if i not in known]
        if missing:
            raise BenchError(f"unknown problem ids: {', '.join(missing[:5])}")
        wanted = set(selection.ids)
        chosen = [p for p in chosen if p.id in wanted]
    if selection.levels:
        chosen = [p for p in chosen if p.level in selection.levels]
    if selection.subjects:
        wanted_subjects = {s.casefold() for s in selection.subjects}
        chosen = [p for p in chosen if (p.subject or "").casefold() in wanted_subjects]
    if selection.limit is not None:
        chosen = chosen[: selection.limit]
    if not chosen:
        raise BenchError("the filters select no problems")
    return chosen


def load_problems(names: Sequence[str], selection: Selection) -> list[Problem]:
    """Problems of every named dataset, each filtered by the same selection."""
    problems: list[Problem] = []
    for name in names:
        problems.extend(select(load_dataset(name), selection))
    return problems
