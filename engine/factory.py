"""Open the engine an `EngineConfig` describes: in-process vLLM or a remote vLLM server
(or vllm-router in front of several).

The server's settings are translated into this config by the composition root
(`ttscale.server.wiring`), so this layer knows nothing about the layers above it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from .lifecycle import load_in_thread
from .model_shape import read_model_shape
from .model_store import DEFAULT_MODEL_NAME, ensure_default_model, validate_model_dir
from .protocol import Engine, EngineUnavailable


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to open one engine."""

    kind: Literal["local", "remote"] = "local"
    model: Path | None = None
    """Local model directory; None: the embedded default (converted on first use)."""
    served_model_name: str | None = None
    remote_urls: tuple[str, ...] = field(default_factory=tuple)
    """One URL: a vLLM server, or vllm-router in front of several (a tuple because the
    settings accept a list, so that more than one can be refused with a clear message)."""
    remote_api_key: str | None = None
    cache_dir: Path | None = None
    max_model_len: int | None = None
    dtype: str = "auto"
    seed: int = 0
    gpu_memory_utilization: float | None = None
    """GPU memory fraction for this engine (None: vLLM's default)."""
    block_size: int | None = None
    """KV-cache block size in tokens (None: vLLM's default, 16 on a GPU, 128 on a CPU)."""
    reasoning_parser: str | None = None
    """vLLM's reasoning parser for this model, by its server name (`deepseek_r1`, ...)."""
    tool_call_parser: str | None = None
    """vLLM's tool-call parser for this model, by its server name (`hermes`, ...)."""
    auto_tool_choice: bool = False
    """Whether the model may choose to call a tool (vLLM's `--enable-auto-tool-choice`)."""


def resolve_model(config: EngineConfig) -> tuple[Path, str]:
    """The model directory to serve and the name clients use for it.

    Converts the embedded default on first use (blocking: call it off the event loop).
    """
    if config.model is None:
        path = ensure_default_model(config.cache_dir)
        return path, config.served_model_name or DEFAULT_MODEL_NAME
    path = validate_model_dir(config.model)
    return path, config.served_model_name or path.resolve().name


async def open_engine(config: EngineConfig) -> Engine:
    if config.kind == "remote":
        from .remote import ONE_URL, RemoteVLLMEngine

        if len(config.remote_urls) != 1:
            raise EngineUnavailable(f"{ONE_URL}; got {len(config.remote_urls)}")
        shape = read_model_shape(config.model) if config.model else None
        return await RemoteVLLMEngine.connect(
            config.remote_urls,
            api_key=config.remote_api_key,
            shape=shape,
            model_path=str(config.model) if config.model else None,
            reasoning_parser=config.reasoning_parser,
            tool_call_parser=config.tool_call_parser,
            auto_tool_choice=config.auto_tool_choice,
        )

    from .local_vllm import LocalVLLMEngine

    path, name = await asyncio.to_thread(resolve_model, config)
    load = partial(
        LocalVLLMEngine.load,
        path,
        name,
        max_model_len=config.max_model_len,
        dtype=config.dtype,
        seed=config.seed,
        gpu_memory_utilization=config.gpu_memory_utilization,
        extra_engine_args={"block_size": config.block_size} if config.block_size else None,
        reasoning_parser=config.reasoning_parser,
        tool_call_parser=config.tool_call_parser,
        auto_tool_choice=config.auto_tool_choice,
    )
    return await load_in_thread(load, LocalVLLMEngine.close)
