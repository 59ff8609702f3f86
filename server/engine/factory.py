"""Build the engine the settings ask for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..config import Settings
from ..model_store import DEFAULT_MODEL_NAME, ensure_default_model, validate_model_dir
from .model_shape import read_model_shape
from .protocol import Engine


def resolve_model(settings: Settings) -> tuple[Path, str]:
    """The model directory to serve and the name clients use for it.

    Converts the embedded default on first use (blocking: call it off the event loop).
    """
    if settings.model is None:
        path = ensure_default_model(settings.cache_dir)
        return path, settings.served_model_name or DEFAULT_MODEL_NAME
    path = validate_model_dir(settings.model)
    return path, settings.served_model_name or path.resolve().name


async def open_engine(settings: Settings) -> Engine:
    if settings.engine == "remote":
        from .remote import RemoteVLLMEngine

        shape = read_model_shape(settings.model) if settings.model else None
        return await RemoteVLLMEngine.connect(
            settings.remote_urls,
            api_key=settings.remote_api_key,
            shape=shape,
            model_path=str(settings.model) if settings.model else None,
        )

    from .local_vllm import LocalVLLMEngine

    path, name = await asyncio.to_thread(resolve_model, settings)
    return await asyncio.to_thread(
        LocalVLLMEngine.load,
        path,
        name,
        max_model_len=settings.max_model_len,
        dtype=settings.dtype,
        seed=settings.seed,
    )
