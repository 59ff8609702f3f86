"""The composition root: server settings -> engine, verifiers, strategies, service.

The only place that knows how the layers fit together for a server process (or an
in-process benchmark run, which builds the same service from the same settings).
"""

from __future__ import annotations

from typing import Any

from ttscale.engine.factory import EngineConfig
from ttscale.engine.protocol import Engine
from ttscale.strategies.base import Verifiers
from ttscale.strategies.registry import Strategy, discover
from ttscale.strategies.run import Service, ServiceLimits
from ttscale.verifiers.judge import LLMJudge
from ttscale.verifiers.math_grader import MathGrader

from .config import Settings


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        kind=settings.engine,
        model=settings.model,
        served_model_name=settings.served_model_name,
        remote_urls=tuple(settings.remote_urls),
        remote_api_key=settings.remote_api_key,
        cache_dir=settings.cache_dir,
        max_model_len=settings.max_model_len,
        dtype=settings.dtype,
        seed=settings.seed,
    )


async def build_verifiers(settings: Settings, engine: Engine) -> Verifiers:
    """Math grading workers and the judge (the served model asked for P(Yes))."""
    grader = MathGrader(workers=settings.grader_workers)
    await grader.warm_up()
    judge = LLMJudge(engine)
    return Verifiers(grader, outcome={"judge": judge}, process={"judge": judge})


def service_limits(settings: Settings) -> ServiceLimits:
    return ServiceLimits(
        max_n=settings.max_n,
        max_request_tokens=settings.max_request_tokens,
        min_sample_tokens=settings.min_sample_tokens,
        default_max_tokens=settings.default_max_tokens,
    )


async def build_service(
    settings: Settings, engine: Engine, strategies: dict[str, Strategy[Any]] | None = None
) -> Service:
    """The service entry around an open engine: verifiers, strategies, limits."""
    verifiers = await build_verifiers(settings, engine)
    return Service(engine, verifiers, strategies or discover(), service_limits(settings))
