"""Models the tests build or prepare, cached across runs.

The tiny model is a randomly initialised Qwen2 (2 layers, hidden 128, head_dim 64) with
SmolLM2's tokenizer and chat template: the real vLLM loading and sampling code runs on
it, several times faster than on SmolLM2 itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from server.model_store import default_cache_dir, ensure_default_model, staged_directory

TINY_MODEL_NAME = "tiny-qwen2-test"
_TINY_VERSION = "1"


def tiny_model_dir(cache_dir: Path | None = None) -> Path:
    """Build (once) and return the tiny random Qwen2 model directory."""
    cache = cache_dir or default_cache_dir()
    target = cache / "test-models" / f"{TINY_MODEL_NAME}-v{_TINY_VERSION}"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    source = ensure_default_model(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token),
        dtype=torch.bfloat16,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    with staged_directory(target) as staging:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging, safe_serialization=True)
        generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
        (staging / "generation_config.json").write_text(json.dumps(generation))
    return target
