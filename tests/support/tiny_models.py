"""Tiny randomly initialised models (no weights can be downloaded here), cached across runs.

Used by the tests and by the reward-model throughput benchmark.

The tiny model is a randomly initialised Qwen2 (2 layers, hidden 128, head_dim 64) with
SmolLM2's tokenizer and chat template: the real vLLM loading and sampling code runs on
it, several times faster than on SmolLM2 itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from ttscale.engine.model_store import default_cache_dir, ensure_default_model, staged_directory

TINY_MODEL_NAME = "tiny-qwen2-test"
_TINY_VERSION = "1"


TINY_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "max_position_embeddings": 2048,
}
"""Every tiny test model's shape: 2 layers, hidden 128, head_dim 64 (vLLM refuses 16)."""


def tiny_qwen2_config(tokenizer, **overrides):
    """2 layers, hidden 128, head_dim 64 (vLLM refuses 16), the tokenizer's vocabulary."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token),
        **overrides,
    )


def tiny_model_dir(cache_dir: Path | None = None) -> Path:
    """Build (once) and return the tiny random Qwen2 model directory."""
    cache = cache_dir or default_cache_dir()
    target = cache / "test-models" / f"{TINY_MODEL_NAME}-v{_TINY_VERSION}"
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model(cache_dir))
    return _save_tiny_causal_lm(target, tokenizer, seed=0)


def _save_tiny_causal_lm(target: Path, tokenizer, seed: int) -> Path:
    """A random tiny Qwen2 (bf16 weights, tied embeddings) for `tokenizer`, at `target`."""
    import torch
    from transformers import Qwen2ForCausalLM

    config = tiny_qwen2_config(tokenizer, tie_word_embeddings=True, dtype=torch.bfloat16)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    with staged_directory(target) as staging:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging, safe_serialization=True)
        generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
        (staging / "generation_config.json").write_text(json.dumps(generation))
    return target


TINY_REASONING_NAME = "tiny-qwen2-reasoning-test"
THINK_START, THINK_END = "<think>", "</think>"
_REASONING_VERSION = "1"
REASONING_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% else %}{{ '<think>\\n' }}{% endif %}"
    "{% endif %}"
)
"""A chat template that opens the thought in the generation prompt, as reasoning models'
templates do (DeepSeek-R1 distills, Qwen3), and closes it at once when
`enable_thinking` is false (Qwen3's switch)."""


def tiny_reasoning_model_dir(cache_dir: Path | None = None) -> Path:
    """The tiny random Qwen2 as a reasoning model: SmolLM2's tokenizer with `<think>` and
    `</think>` added as special tokens, and `REASONING_TEMPLATE`. Random weights never
    close a thought by themselves, which is what a forced close at a thinking budget
    needs to show. vLLM's `deepseek_r1` reasoning parser reads it."""
    cache = cache_dir or default_cache_dir()
    target = cache / "test-models" / f"{TINY_REASONING_NAME}-v{_REASONING_VERSION}"
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model(cache_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": [THINK_START, THINK_END]})
    tokenizer.chat_template = REASONING_TEMPLATE
    return _save_tiny_causal_lm(target, tokenizer, seed=1)


STEP_TOKEN = "<extra_0>"
_REWARD_VERSION = "1"


def tiny_reward_model_dir(kind: str, cache_dir: Path | None = None) -> Path:
    """A tiny random reward model in a format vLLM serves with its pooling runner.

    kind "prm": `Qwen2ForProcessRewardModel` (Qwen2.5-Math-PRM layout, 2 labels) with a
    `<extra_0>` step token added to SmolLM2's tokenizer. kind "orm": `Qwen2ForRewardModel`
    (Qwen2.5-Math-RM layout, 1 label). transformers has neither class (the real
    checkpoints ship remote code), so the weights are written in vLLM's layout: a Qwen2
    body under `model.` and a `score` head Linear(H, H) -> ReLU -> Linear(H, labels).
    """
    labels = {"prm": 2, "orm": 1}[kind]
    arch = {"prm": "Qwen2ForProcessRewardModel", "orm": "Qwen2ForRewardModel"}[kind]
    cache = cache_dir or default_cache_dir()
    target = cache / "test-models" / f"tiny-{kind}-v{_REWARD_VERSION}"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2Model

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model(cache_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": [STEP_TOKEN]})
    config = tiny_qwen2_config(tokenizer, tie_word_embeddings=False, num_labels=labels)
    torch.manual_seed(labels)
    body = Qwen2Model(config).eval().float()
    hidden = config.hidden_size
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, labels)
    )
    for layer in (head[0], head[2]):  # a random head with logits far from zero
        torch.nn.init.normal_(layer.weight, std=0.3)
        torch.nn.init.normal_(layer.bias, std=0.3)
    weights = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    weights.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    with staged_directory(target) as staging:
        config.save_pretrained(staging)
        written = json.loads((staging / "config.json").read_text())
        written.update(architectures=[arch], num_labels=labels)
        (staging / "config.json").write_text(json.dumps(written, indent=2))
        tokenizer.save_pretrained(staging)
        save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
    return target


def reference_reward_logits(model_dir: Path, token_ids: list[int]):
    """Per-token logits of a tiny reward model computed with plain torch (no vLLM)."""
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2Model

    config = Qwen2Config.from_pretrained(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    body = Qwen2Model(config).eval().float()
    body.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
    hidden = config.hidden_size
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, config.num_labels)
    )
    head.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("score.")})
    with torch.no_grad():
        return head(body(input_ids=torch.tensor([token_ids])).last_hidden_state)[0]


SHEPHERD_STEP_TAG = " ки"
_SHEPHERD_VERSION = "1"


def tiny_shepherd_prm_dir(cache_dir: Path | None = None) -> Path:
    """A tiny random Math-Shepherd-style PRM: a plain causal LM (`MistralForCausalLM`,
    like math-shepherd-mistral-7b-prm; 2 layers, hidden 128, head_dim 64, untied LM head).

    The tokenizer is SmolLM2's with the step tag " ки" added as one (non-special) token:
    in SmolLM2's vocabulary it is two tokens, while in the real model's it is one. The
    labels "+" and "-" are single tokens in SmolLM2 already. The LM head is drawn wider
    than usual so that P("+") at the tags lies well away from 1/2. Weights are float32.
    """
    cache = cache_dir or default_cache_dir()
    target = cache / "test-models" / f"tiny-shepherd-prm-v{_SHEPHERD_VERSION}"
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AddedToken, AutoTokenizer, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model(cache_dir))
    tokenizer.add_tokens([AddedToken(SHEPHERD_STEP_TAG, normalized=False, special=False)])
    config = MistralConfig(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.eos_token),
        dtype=torch.float32,
    )
    torch.manual_seed(3)
    model = MistralForCausalLM(config).eval().float()
    torch.nn.init.normal_(model.lm_head.weight, std=0.3)
    with staged_directory(target) as staging:
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging, safe_serialization=True)
    return target


def reference_causal_lm_logits(model_dir: Path, token_ids: list[int]):
    """Next-token logits at every position of a tiny causal LM, with transformers in
    float32 (no vLLM): a [len(token_ids), vocab] tensor."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([token_ids])).logits[0]
