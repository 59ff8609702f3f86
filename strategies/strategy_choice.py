"""How a request names its strategy, parameters and budget.

Two ways, same result:
- an extension object in the body, `"ttscale": {"strategy": ..., "params": {...},
  "budget": {...}}` (what the `openai` client sends with `extra_body={"ttscale": ...}`);
- a model-name suffix for clients that cannot send extra fields:
  `"model": "NAME:STRATEGY?key=value&key=value"`. Keys may be dotted to reach nested
  parameters (`sampling.max_tokens=128`); keys under `budget.` set the budget
  (`budget.max_generated_tokens=2000`). Values are read as JSON when they parse
  (`adaptive=true`, `n=16`, `temperatures=[0,0.5,1]`), as strings otherwise.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field

from .budget import BudgetLimits
from .errors import InvalidRequest


class StrategyChoice(BaseModel):
    """The `ttscale` extension object of a request."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(None, description="strategy name; none: one plain sample")
    params: dict[str, Any] = Field(default_factory=dict)
    budget: BudgetLimits = BudgetLimits()
    include_text: bool = Field(False, description="include every candidate's text")
    progress: bool = Field(True, description="progress events in streamed responses")


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise InvalidRequest(
                f"model suffix: {dotted!r} conflicts with another key", param="model"
            )
        target = node
    target[leaf] = value


def split_model_name(model: str) -> tuple[str, StrategyChoice | None]:
    """`"base:strategy?k=v"` -> ("base", options); a plain name -> (name, None)."""
    if ":" not in model:
        return model, None
    base, _, suffix = model.partition(":")
    strategy, _, query = suffix.partition("?")
    if not base or not strategy:
        raise InvalidRequest(f"model {model!r}: expected NAME:STRATEGY?key=value", param="model")
    params: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise InvalidRequest(f"model suffix: cannot read {query!r}", param="model") from exc
    for key, raw in pairs:
        if key.startswith("budget."):
            budget[key.removeprefix("budget.")] = _value(raw)
        else:
            _set_dotted(params, key, _value(raw))
    try:
        options = StrategyChoice(strategy=strategy, params=params, budget=budget)
    except ValueError as exc:
        raise InvalidRequest(f"model suffix: {exc}", param="model") from exc
    return base, options
