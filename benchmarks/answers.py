"""How a dataset's declared answer format reaches the settings that run on it.

A multiple-choice dataset declares its format (`Dataset.answer_format`): every setting
run on its problems gets it as the strategy parameter `answer`, so the strategies vote on
option letters, unless the setting's spec names an `answer` of its own. With
`constrain`, the engine may write nothing but one option's label (vLLM's structured
outputs, `{"choice": [...]}`), so every sample's answer reads exactly. Math datasets
declare nothing: their settings' parameters are exactly the grid's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from ttscale.strategies.errors import first_problem
from ttscale.strategies.registry import Strategy
from ttscale.verifiers.structured import AnswerFormat

from .datasets import BenchError
from .grid import Setting


def choice_labels(answer_format: AnswerFormat | None) -> tuple[str, ...]:
    """The labels a choice format's answers are (A, B, ...); empty for any other."""
    if answer_format is None or answer_format.kind != "choice":
        return ()
    return answer_format.options or ()


def with_answer_format(
    params: dict[str, Any], answer_format: AnswerFormat | None, *, constrain: bool = False
) -> dict[str, Any]:
    """A setting's parameters for a dataset of this format: `answer` unless the setting
    names its own, and with `constrain`, a choice constraint unless its sampling has a
    constraint already. Unchanged for math datasets (no format)."""
    if answer_format is None:
        return params
    adapted = dict(params)
    adapted.setdefault("answer", answer_format.model_dump(mode="json", exclude_defaults=True))
    labels = choice_labels(answer_format)
    sampling = params.get("sampling", {})
    if constrain and labels and sampling.get("structured_outputs") is None:
        adapted["sampling"] = {**sampling, "structured_outputs": {"choice": list(labels)}}
    return adapted


def check_constrain(formats: Collection[AnswerFormat | None]) -> None:
    """`--constrain` needs a multiple-choice dataset: on math alone it would do nothing."""
    if not any(choice_labels(f) for f in formats):
        raise BenchError("--constrain applies to multiple-choice datasets only")


def check_settings(
    settings: Collection[Setting],
    formats: Mapping[str, AnswerFormat | None],
    strategies: Mapping[str, Strategy],
    *,
    constrain: bool = False,
) -> None:
    """Validate each setting as it will run on each dataset, before any model loads: a
    parameter that does not go with a dataset's format (`answer_from_thinking` reads
    boxed answers only) is a usage error now, not a refusal mid-run."""
    for dataset, answer_format in formats.items():
        if answer_format is None:
            continue  # the grid's own parameters, validated by build_grid
        for setting in settings:
            params = with_answer_format(setting.params, answer_format, constrain=constrain)
            try:
                strategies[setting.strategy].parse_params(params)
            except ValidationError as exc:
                where, message, _ = first_problem(exc)
                raise BenchError(f"{setting.label} on {dataset}: {where}: {message}") from exc
