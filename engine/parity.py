"""Does the engine compute what the model means? A numerics self-check against transformers.

vLLM's kernels differ by machine: on one Intel CPU with AMX its CPU bf16 path produced
unrelated text for SmolLM2 while transformers was right. Content tests and users on new
hardware need to know that before trusting any answer. The check: the engine decodes
fixed prompts greedily; transformers (no vLLM code, in the engine's dtype) reads each
prompt plus the engine's tokens in one teacher-forced pass; at every position the
engine's token must be the one transformers ranks first, or within a tie tolerance of
it. The tolerance admits near-ties that rounding may flip between two correct
implementations: 0.02 nats in float32, 0.3 nats in bf16/fp16 (their 8-bit and 11-bit
mantissas move log-probabilities by about 0.1 nats here); wrong numerics miss by whole
nats within the first few tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .protocol import Engine
from .types import SamplingSpec

PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "What is 12 + 7? Answer with a number.",
    "Name three colours.",
    "Explain what a prime number is in one sentence.",
)
TOKENS = 16
TIE_NATS = {"float32": 0.02, "bfloat16": 0.3, "float16": 0.3}
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class PromptParity:
    prompt: str
    tokens: int
    agreed: int
    """Leading positions where the engine chose transformers' first token (or a tie)."""
    gap_nats: float | None
    """At the first disagreement: how far the engine's token ranks below the best."""
    engine_text: str

    @property
    def ok(self) -> bool:
        return self.agreed == self.tokens


@dataclass(frozen=True)
class ParityReport:
    model_path: str
    engine_dtype: str
    tie_nats: float
    prompts: list[PromptParity]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.prompts)

    def describe(self) -> str:
        """Readable lines: machine, model, each prompt, verdict."""
        lines = [f"cpu: {cpu_summary()}", f"model: {self.model_path}"]
        lines.append(
            f"engine dtype: {self.engine_dtype}; reference: transformers {self.engine_dtype}; "
            f"ties within {self.tie_nats} nats"
        )
        for p in self.prompts:
            where = "" if p.ok else f"; first disagreement {p.gap_nats:.3f} nats below the best"
            lines.append(
                f"  {p.agreed:2d}/{p.tokens} tokens agree{where}: {p.prompt!r} -> {p.engine_text!r}"
            )
        if self.ok:
            lines.append(
                f"verdict: ok: the engine's greedy tokens match transformers on "
                f"{len(self.prompts)} prompts x {TOKENS} tokens"
            )
        else:
            lines.append(
                "verdict: WRONG NUMERICS: the engine does not decode what the model means on "
                "this machine; try --dtype float32, and do not trust its answers until this passes"
            )
        return "\n".join(lines)


def agreement(
    engine_tokens: Sequence[int], reference_logprobs: Sequence[Sequence[float]], tie_nats: float
) -> tuple[int, float | None]:
    """(positions agreed before the first disagreement, gap there or None).

    `reference_logprobs[i]` is transformers' log-distribution over the vocabulary for the
    i-th generated position, given the prompt and the engine's earlier tokens.
    """
    for position, (token, row) in enumerate(zip(engine_tokens, reference_logprobs, strict=True)):
        gap = max(row) - row[token]
        if gap > tie_nats:
            return position, gap
    return len(engine_tokens), None


async def check_parity(
    engine: Engine,
    model_path: Path,
    prompts: Sequence[str] = PROMPTS,
    tokens: int = TOKENS,
) -> ParityReport:
    """Greedy tokens of `engine` against transformers on the same model directory."""
    dtype = engine.info.dtype if engine.info.dtype in TIE_NATS else "float32"
    tie_nats = TIE_NATS[dtype]
    spec = SamplingSpec(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    prompt_ids = [await engine.render_chat([{"role": "user", "content": p}]) for p in prompts]
    results = await asyncio.gather(
        *(engine.generate(ids, spec, request_id=f"parity-{i}") for i, ids in enumerate(prompt_ids))
    )
    generated = [r.samples[0].token_ids for r in results]
    reference = await asyncio.to_thread(
        _reference_logprobs, model_path, prompt_ids, generated, dtype
    )
    rows = []
    for prompt, result, tokens_out, logprobs in zip(
        prompts, results, generated, reference, strict=True
    ):
        agreed, gap = agreement(tokens_out, logprobs, tie_nats)
        rows.append(PromptParity(prompt, len(tokens_out), agreed, gap, result.samples[0].text))
    return ParityReport(str(model_path), dtype, tie_nats, rows)


def _reference_logprobs(
    model_path: Path, prompts: Sequence[list[int]], generated: Sequence[list[int]], dtype: str
) -> list[list[list[float]]]:
    """transformers' log-distributions at each generated position (blocking)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    model.eval()
    out = []
    with torch.no_grad():
        for prompt, tokens in zip(prompts, generated, strict=True):
            ids = torch.tensor([prompt + tokens])
            logits = model(ids).logits[0, len(prompt) - 1 : len(prompt) + len(tokens) - 1]
            out.append(torch.log_softmax(logits.float(), dim=-1).tolist())
    return out


def cpu_summary() -> str:
    """The CPU model and the vector/matrix extensions that change vLLM's CPU kernels."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown")  # fmt: skip
    flags_line = next((line for line in info.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    present = [f for f in _CPU_FLAGS if f in flags]
    return f"{model} ({', '.join(present) or 'no avx2/avx512/amx'})"
