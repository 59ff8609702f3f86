"""Strategy registry: name -> parameter model and implementation.

Every module in this package that defines `STRATEGY = Strategy(...)` is registered, so
adding a strategy is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .params import StrategyParams

if TYPE_CHECKING:
    from .base import StrategyContext, StrategyResult

P = TypeVar("P", bound=StrategyParams)


@dataclass(frozen=True)
class Strategy(Generic[P]):
    """A named strategy: its parameter model `P` (what it declares to the service and the
    benchmark, see `params.StrategyParams`) and `execute`, which takes parameters of
    exactly that model."""

    name: str
    params_model: type[P]
    execute: Callable[[StrategyContext, P], Awaitable[StrategyResult]]
    description: str | None = None

    def parse_params(self, raw: dict[str, Any] | None) -> P:
        return self.params_model.model_validate(raw or {})

    def json_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()


def baseline(strategies: dict[str, Strategy[Any]]) -> str:
    """The name of the strategy whose parameters declare it the benchmark baseline."""
    (name,) = [n for n, s in strategies.items() if s.params_model.benchmark_baseline]
    return name


def discover() -> dict[str, Strategy[Any]]:
    """All strategies of this package, by name (imported on first call)."""
    package = importlib.import_module(__package__)
    found: dict[str, Strategy[Any]] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{__package__}.{module_info.name}")
        strategy = getattr(module, "STRATEGY", None)
        if isinstance(strategy, Strategy):
            if strategy.name in found:
                raise RuntimeError(f"two strategies are named {strategy.name!r}")
            found[strategy.name] = strategy
    return dict(sorted(found.items()))
