"""The settings a benchmark runs: strategies x budgets.

A strategy is written as the model-name suffix of the API (`NAME?key=value&...`), with an
optional label in front (`sc-adaptive=self_consistency?adaptive=true`). The budget `N`
sets the strategy's scale knob (each strategy declares it: `n`, or samples per
temperature, or expansions per beam, or particles). A setting may generate at most
(samples it draws) x max_tokens per problem: N x max_tokens for the n-based strategies,
so those are compute-matched at equal N; the report's cost axes compare the rest by what
they actually spent.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttscale.strategies.errors import InvalidRequest, first_problem
from ttscale.strategies.registry import Strategy
from ttscale.strategies.strategy_choice import split_model_name

from .datasets import BenchError


class SamplingConfig(BaseModel):
    """The sampling every setting shares (a run's identity: see RunConfig)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int = 0
    logprobs: int | None = Field(
        20, ge=0, le=20, description="top-k logprobs recorded for every sample (replay)"
    )
    constrain_choices: bool = Field(
        False,
        description="multiple-choice datasets: a sample may only be one option's label "
        "(the engine's structured outputs), so every answer reads exactly",
    )


class Setting(BaseModel):
    """One column of the grid: a strategy with its parameters at one budget."""

    model_config = ConfigDict(frozen=True)

    label: str
    strategy: str
    n: int
    params: dict[str, Any]
    budget: dict[str, Any]

    @property
    def family(self) -> str:
        """The label without the budget: settings of one family form a curve."""
        return self.label.rsplit("@", 1)[0]


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """`[label=]NAME?k=v` -> (family label, strategy name, params, budget)."""
    head, _, _ = spec.partition("?")
    label = None
    if "=" in head:
        label, _, spec = spec.partition("=")
    try:
        _, options = split_model_name(f"bench:{spec}")
    except InvalidRequest as exc:
        raise BenchError(f"strategy {spec!r}: {exc.message}") from exc
    assert options is not None and options.strategy is not None
    budget = options.budget.model_dump(exclude_none=True)
    family = label or spec.replace("?", "(").replace("&", ",") + (")" if "?" in spec else "")
    return family, options.strategy, options.params, budget


def build_grid(
    specs: Sequence[str],
    budgets: Sequence[int],
    sampling: SamplingConfig,
    strategies: dict[str, Strategy],
) -> list[Setting]:
    """Every spec at every budget, its parameters validated now (not mid-run)."""
    settings: list[Setting] = []
    for spec in specs:
        family, name, params, budget = parse_spec(spec)
        if name not in strategies:
            raise BenchError(f"unknown strategy {name!r}; choose from {', '.join(strategies)}")
        strategy = strategies[name]
        knob = strategy.params_model.scale_knob
        if knob is None:
            raise BenchError(f"strategy {name!r} has no scale knob for a budget N to set")
        for n in budgets:
            sampled = {
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens,
                **({"logprobs": sampling.logprobs} if sampling.logprobs is not None else {}),
                **params.get("sampling", {}),
            }
            full = {**params, knob: n, "sampling": sampled}
            try:
                parsed = strategy.parse_params(full)
            except ValidationError as exc:
                where, message, _ = first_problem(exc)
                raise BenchError(f"strategy {spec!r} at N={n}: {where}: {message}") from exc
            samples = parsed.samples_in_all()  # None: no fixed count (the server's cap)
            cap = (
                {} if samples is None else {"max_generated_tokens": samples * sampled["max_tokens"]}
            )
            cap.update(budget)
            settings.append(
                Setting(label=f"{family}@{n}", strategy=name, n=n, params=full, budget=cap)
            )
    labels = [s.label for s in settings]
    if len(set(labels)) != len(labels):
        raise BenchError("two settings share a label; give one a name with LABEL=STRATEGY")
    return settings


def problem_seed(base_seed: int, problem_id: str) -> int:
    """A per-problem seed: every setting draws the same samples for a problem (sample i
    gets seed + i), so settings differ only in how they use them, and N=1 is a prefix of
    N=4. Common random numbers make paired comparisons sharper."""
    return (base_seed * 1_000_003 + zlib.crc32(problem_id.encode())) % 2**31


def with_seed(setting: Setting, seed: int) -> dict[str, Any]:
    """The setting's parameters with this problem's seed."""
    return {**setting.params, "sampling": {**setting.params["sampling"], "seed": seed}}
