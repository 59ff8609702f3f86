"""What every measurement script does before it measures: quiet logs, vLLM's CPU
environment, and the model to load (a `--model` directory or the embedded default)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ttscale.engine.local_vllm import apply_cpu_defaults
from ttscale.engine.model_store import DEFAULT_MODEL_NAME, ensure_default_model


def prepare_measurement() -> None:
    """Warnings only (ours and vLLM's), and the CPU settings vLLM reads at import."""
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    apply_cpu_defaults()


def model_to_measure(model: str | None) -> tuple[Path, str]:
    """The model directory and its served name: `model`, or the embedded SmolLM2
    (converted on first use)."""
    if model:
        path = Path(model)
        return path, path.name
    return ensure_default_model(), DEFAULT_MODEL_NAME
