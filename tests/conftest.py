"""Shared fixtures: one real vLLM engine (tiny model) for the whole test session, the
models it needs, and math grading workers. The test lanes are `tests/support/lanes.py`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ttscale.engine.local_vllm import LocalVLLMEngine, apply_cpu_defaults
from ttscale.engine.model_store import ensure_default_model
from ttscale.verifiers.math_grader import MathGrader

from .support.tiny_models import TINY_MODEL_NAME, tiny_model_dir

apply_cpu_defaults()


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    return ensure_default_model()


@pytest.fixture(scope="session")
def tiny_model_path(default_model_path: Path) -> Path:
    return tiny_model_dir()


@pytest.fixture(scope="session")
async def engine(tiny_model_path: Path, starts_vllm: None) -> AsyncIterator[LocalVLLMEngine]:
    """The session's one in-process vLLM engine on the tiny model."""
    loaded = await asyncio.to_thread(
        LocalVLLMEngine.load, tiny_model_path, TINY_MODEL_NAME, max_model_len=1024
    )
    yield loaded
    await loaded.close()


@pytest.fixture(scope="module")
def grader() -> Iterator[MathGrader]:
    """Math grading workers with a short timeout (the default is 5 s), started before the
    first test as the server starts them: grouping that waits for a worker to start is
    bounded like any other, and falls back to exact strings on a busy machine."""
    grader = MathGrader(workers=2, timeout_s=3.0)
    asyncio.run(grader.warm_up())
    yield grader
    grader.close()
