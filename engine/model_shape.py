"""Architecture numbers of a local model directory, for the FLOPs estimate.

The parameter count comes from the safetensors headers (exact, and cheap: only the
JSON header of each file is read), the rest from `config.json`.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path

from .types import ModelShape

logger = logging.getLogger(__name__)


def count_safetensors_params(model_dir: Path) -> int:
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_len))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total


def read_model_shape(model_dir: Path) -> ModelShape | None:
    """None when the directory does not say enough (the budget then reports tokens only)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        config = config.get("text_config", config)
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return ModelShape(
            num_params=count_safetensors_params(model_dir),
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=hidden,
            num_attention_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads", heads)),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab_size=int(config["vocab_size"]),
        )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        logger.warning("cannot read the model shape of %s: %s", model_dir, exc)
        return None
