"""The composition root: server settings -> engine, verifiers, strategies, service.

The only place that knows how the layers fit together for a server process (or an
in-process benchmark run, which builds the same service from the same settings).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

from ttscale.engine.factory import EngineConfig
from ttscale.engine.lifecycle import load_in_thread
from ttscale.engine.local_vllm import has_cuda_device
from ttscale.engine.model_store import validate_model_dir
from ttscale.engine.protocol import Engine
from ttscale.strategies.base import Verifiers
from ttscale.strategies.registry import Strategy, discover
from ttscale.strategies.service import Service, ServiceLimits
from ttscale.verifiers.judge import LLMJudge
from ttscale.verifiers.math_grader import MathGrader
from ttscale.verifiers.reward_model import RewardModel

from .config import RewardSpec, Settings

logger = logging.getLogger("ttscale.server")


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        gpu_memory_utilization=_generator_gpu_share(settings),
        kind=settings.engine,
        model=settings.model,
        served_model_name=settings.served_model_name,
        remote_urls=tuple(settings.remote_urls),
        remote_api_key=settings.remote_api_key,
        cache_dir=settings.cache_dir,
        max_model_len=settings.max_model_len,
        dtype=settings.dtype,
        seed=settings.seed,
        block_size=settings.block_size,
        reasoning_parser=settings.reasoning_parser,
        tool_call_parser=settings.tool_call_parser,
        auto_tool_choice=settings.auto_tool_choice,
    )


_VLLM_DEFAULT_GPU_SHARE = 0.9


def _local_rewards(settings: Settings) -> list[RewardSpec]:
    return [spec for spec in settings.reward_models() if not spec.is_remote]


def _generator_gpu_share(settings: Settings) -> float | None:
    """On a GPU shared with in-process reward models, the generator's part of memory."""
    if not _local_rewards(settings) or not has_cuda_device():
        return None
    return round(_VLLM_DEFAULT_GPU_SHARE - settings.reward_gpu_share, 3)


def _reward_gpu_share(settings: Settings) -> float | None:
    local = _local_rewards(settings)
    if not local or not has_cuda_device():
        return None
    return round(settings.reward_gpu_share / len(local), 3)


def _log_memory_split(settings: Settings) -> None:
    local = _local_rewards(settings)
    if not local:
        return
    if has_cuda_device():
        logger.info(
            "GPU memory split: generator %.2f, each of %d in-process reward model(s) %.2f",
            _generator_gpu_share(settings),
            len(local),
            _reward_gpu_share(settings),
        )
    else:
        logger.info(
            "CPU: the generator and %d in-process reward model(s) each reserve "
            "VLLM_CPU_KVCACHE_SPACE=%s GiB of KV cache",
            len(local),
            os.environ.get("VLLM_CPU_KVCACHE_SPACE", "?"),
        )


async def load_reward_model(settings: Settings, spec: RewardSpec) -> RewardModel:
    """A reward model on the pooling runner: in this process, or a remote pooling server."""
    if spec.is_remote:
        return await RewardModel.connect(
            spec.source, spec.kind, api_key=settings.remote_api_key, prm_format=spec.prm_format
        )
    path = validate_model_dir(Path(spec.source))
    load = partial(
        RewardModel.load,
        path,
        spec.kind,
        dtype=settings.dtype,
        gpu_memory_utilization=_reward_gpu_share(settings),
        prm_format=spec.prm_format,
    )
    return await load_in_thread(load, RewardModel.close)


async def build_verifiers(settings: Settings, engine: Engine) -> Verifiers:
    """Math grading workers, the judge (the served model asked for P(Yes)), and the
    reward models the settings name, as process (PRM) or outcome (ORM) verifiers."""
    grader = MathGrader(workers=settings.grader_workers, timeout_s=settings.grading_timeout_s)
    judge = LLMJudge(engine)
    verifiers = Verifiers(grader, outcome={"judge": judge}, process={"judge": judge})
    try:
        await grader.warm_up()
        _log_memory_split(settings)
        for spec in settings.reward_models():
            model = await load_reward_model(settings, spec)
            table = verifiers.process if spec.kind == "prm" else verifiers.outcome
            table[spec.name] = model
            logger.info("verifier %s: %s %s", spec.name, spec.kind, model.describe())
    except BaseException:
        await verifiers.close()
        raise
    return verifiers


def service_limits(settings: Settings) -> ServiceLimits:
    return ServiceLimits(
        max_n=settings.max_n,
        max_request_tokens=settings.max_request_tokens,
        min_sample_tokens=settings.min_sample_tokens,
        default_max_tokens=settings.default_max_tokens,
        grading_deadline_s=settings.grading_deadline_s,
        engine_fill=settings.engine_fill,
    )


async def build_service(
    settings: Settings, engine: Engine, strategies: dict[str, Strategy[Any]] | None = None
) -> Service:
    """The service entry around an open engine: verifiers, strategies, limits."""
    verifiers = await build_verifiers(settings, engine)
    return Service(engine, verifiers, strategies or discover(), service_limits(settings))
