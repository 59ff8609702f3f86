"""Strategy registry: name -> parameter model and implementation.

Every module in this package that defines `STRATEGY = Strategy(...)` is registered, so
adding a strategy is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Strategy:
    name: str
    params_model: type[BaseModel]
    run: Callable[[Any, Any], Awaitable[Any]]
    description: str | None = None

    def parse_params(self, raw: dict[str, Any] | None) -> BaseModel:
        return self.params_model.model_validate(raw or {})

    def json_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()


def discover() -> dict[str, Strategy]:
    """All strategies of this package, by name (imported on first call)."""
    import strategies

    found: dict[str, Strategy] = {}
    for module_info in pkgutil.iter_modules(strategies.__path__):
        module = importlib.import_module(f"strategies.{module_info.name}")
        strategy = getattr(module, "STRATEGY", None)
        if isinstance(strategy, Strategy):
            if strategy.name in found:
                raise RuntimeError(f"two strategies are named {strategy.name!r}")
            found[strategy.name] = strategy
    return dict(sorted(found.items()))
