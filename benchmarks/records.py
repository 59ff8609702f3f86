"""What a benchmark run keeps: one JSON line per (setting, problem), with every sample.

The JSONL file is append-only and flushed after each record, so an interrupted run
loses only the problems in flight, and a rerun skips what is recorded. `run.json` holds
what makes results comparable (model, prompt, sampling, backend); resuming a directory
with a different identity is refused rather than silently mixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .datasets import BenchError
from .grid import SamplingConfig, Setting

RECORDS = "records.jsonl"
RUN_CONFIG = "run.json"
GRID = "grid.json"


class SampleTrace(BaseModel):
    """One sample of a strategy run: enough to re-vote it offline (see replay)."""

    index: int | None = Field(
        None,
        description="the sample's number in its request (its seed is the request's plus "
        "this); None in records made before it was kept",
    )
    answer: str | None
    answer_class: int | None
    correct: bool
    tokens: int
    reasoning_tokens: int = Field(0, description="of `tokens`, a reasoning model's thinking")
    answer_source: str | None = Field(
        None, description="answer part or thinking (reasoning models), None: no answer"
    )
    finish_reason: str
    temperature: float | None = None
    mean_entropy: float | None = None
    mean_logprob: float | None = None
    scores: dict[str, float | list[float]] = {}


class Record(BaseModel):
    """One setting on one problem."""

    model_config = ConfigDict(extra="ignore")

    dataset: str
    problem_id: str
    setting: str
    family: str
    strategy: str
    n: int
    params: dict[str, Any] = {}
    gold: str
    answer: str | None
    correct: bool
    stop_reason: str
    prompt_tokens: int
    cached_prompt_tokens: int
    generated_tokens: int
    reasoning_tokens: int = Field(0, description="of `generated_tokens`, the thinking")
    aborted_tokens: int
    verifier_tokens: int
    flops: float
    verifier_flops: float = 0.0
    latency_s: float
    samples: list[SampleTrace]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.setting, self.dataset, self.problem_id)


class RunConfig(BaseModel):
    """A run's identity: records made under another identity are not comparable."""

    model_config = ConfigDict(extra="forbid")

    model: str
    model_source: str | None = Field(
        None, description="the model directory (in process) or server URL it came from"
    )
    backend: str
    dtype: str | None = Field(
        None,
        description="the in-process engine's weights dtype: on a CPU, bf16 samples of one "
        "seed differ with what they are batched with, float32 ones repeat; None over "
        "HTTP, where the server does not say",
    )
    prompt_template: str | dict[str, str] = Field(
        description="the template of every problem, or, where the datasets of a run have "
        "prompts of their own that differ, each dataset's"
    )
    sampling: SamplingConfig

    def check_same(self, other: RunConfig) -> None:
        for field in type(self).model_fields:
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine == theirs:
                continue
            hint = "use another --out"
            if field == "dtype" and theirs is None:
                hint += " (or, for a run recorded before dtypes were kept, add its dtype)"
            raise BenchError(
                f"this output directory holds a run with a different {field} "
                f"({_short(theirs)} there, {_short(mine)} now); {hint}"
            )


def _short(value: Any) -> str:
    text = value.model_dump_json() if isinstance(value, BaseModel) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def open_run(directory: Path, config: RunConfig) -> None:
    """Create the run directory, or check that it holds a run with the same identity."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RUN_CONFIG
    if path.exists():
        try:
            existing = RunConfig.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise BenchError(
                f"{path} is not a run configuration: {exc.errors()[0]['msg']}"
            ) from exc
        config.check_same(existing)
    else:
        path.write_text(config.model_dump_json(indent=2) + "\n")


def read_run_config(directory: Path) -> RunConfig:
    path = directory / RUN_CONFIG
    if not path.exists():
        raise BenchError(f"{directory} holds no benchmark run ({RUN_CONFIG} is missing)")
    return RunConfig.model_validate_json(path.read_text())


class GridEntry(BaseModel):
    label: str
    family: str
    n: int


def write_grid(directory: Path, settings: Sequence[Setting]) -> None:
    """The settings of the latest run, in command-line order: the report's default
    baseline is the first, and settings with nothing recorded are named."""
    entries = [GridEntry(label=s.label, family=s.family, n=s.n).model_dump() for s in settings]
    (directory / GRID).write_text(json.dumps(entries, indent=2) + "\n")


def read_grid(directory: Path) -> list[GridEntry]:
    path = directory / GRID
    if not path.exists():
        return []
    return [GridEntry.model_validate(entry) for entry in json.loads(path.read_text())]


def read_records(directory: Path) -> list[Record]:
    """Every complete record. A last line cut short by a crash is ignored (and removed
    by the next `RecordWriter`); a damaged line elsewhere is an error."""
    path = directory / RECORDS
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")  # bytes: a cut may split a UTF-8 character
    records: list[Record] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(Record.model_validate_json(line))
        except ValidationError as exc:
            if number == len(lines):  # no newline after it: the write was cut short
                break
            raise BenchError(f"{path}:{number}: not a benchmark record") from exc
    return records


class RecordWriter:
    """Appends records, one flushed line each; truncates a torn last line first."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RECORDS
        _drop_torn_tail(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: Record) -> None:
        self._file.write(record.model_dump_json() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _drop_torn_tail(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def done_keys(records: Iterable[Record]) -> set[tuple[str, str, str]]:
    return {record.key for record in records}
