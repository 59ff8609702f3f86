"""Estimated forward-pass FLOPs, the compute unit shared by every strategy.

Per token at context position t (0-based), a decoder-only transformer costs about
    2 * P            for the weight matmuls (P = parameters, embeddings included once:
                     the input lookup is free, the output projection is a matmul)
  + 4 * L * t * A    for attention scores and the weighted sum (A = heads * head_dim).
Prefill of p uncached tokens after c cached ones is the sum over t = c .. c+p-1; decoding
g tokens after a prompt of length s is the sum over t = s .. s+g-1.
"""

from __future__ import annotations

from ttscale.engine.types import ModelShape


def _attention_positions(start: int, count: int) -> int:
    """Sum of t for t in [start, start + count)."""
    return count * start + count * (count - 1) // 2


def forward_flops(shape: ModelShape | None, start: int, count: int) -> float:
    """FLOPs of running `count` tokens through the model at positions start.. ."""
    if shape is None or count <= 0:
        return 0.0
    attention_width = shape.num_attention_heads * shape.head_dim
    return 2.0 * shape.num_params * count + 4.0 * shape.num_layers * attention_width * (
        _attention_positions(start, count)
    )


def sample_flops(
    shape: ModelShape | None, prompt_tokens: int, cached_tokens: int, generated_tokens: int
) -> float:
    """One sample: its uncached prefill plus its decode."""
    prefill = forward_flops(shape, cached_tokens, prompt_tokens - cached_tokens)
    decode = forward_flops(shape, prompt_tokens, generated_tokens)
    return prefill + decode
