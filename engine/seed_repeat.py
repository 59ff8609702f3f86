"""Does a seed reproduce its sample whatever the sample is batched with?

Paired comparisons (one strategy against another on the same seeds) and replays of
recorded samples assume it does. vLLM seeds each sample's sampler alone, so the random
draws repeat; the logits they are drawn from repeat only if the kernels compute a row the
same way in any batch. On a CPU, float32 samples have repeated and bf16 ones mostly not
(lab/studies/numerics-bf16-float32.md). So the answer belongs to the machine and dtype,
and `ttscale doctor` reports it beside the numerics check instead of assuming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from .protocol import Engine
from .types import SamplingSpec

SAMPLES = 4
TOKENS = 32
SEED = 1234
_PROMPT = "Write two sentences about the sea."
_BESIDE = "Count from one to twenty in words."
"""A second prompt drawn at the same time, so the checked samples share a batch with
rows of another length, as a served request's samples do."""


@dataclass(frozen=True)
class SeedRepeat:
    dtype: str | None
    divergence: list[int | None]
    """Per seed: the first position where the sample drawn alone differs from the one drawn
    in the batch (None: alike)."""

    @property
    def repeated(self) -> int:
        return sum(position is None for position in self.divergence)

    @property
    def ok(self) -> bool:
        return self.repeated == len(self.divergence)

    def describe(self) -> str:
        counts = f"{self.repeated} of {len(self.divergence)} seeded samples"
        if self.ok:
            return (
                f"seeds: ok: {counts} came out alike alone and batched ({self.dtype}); "
                "a seed reproduces its sample whatever it runs beside"
            )
        parted = sorted(p for p in self.divergence if p is not None)
        return (
            f"seeds: {counts} came out alike alone and batched ({self.dtype}; the others "
            f"parted after {', '.join(map(str, parted))} tokens): a seed reproduces its "
            "sample only when it is batched alike (try --dtype float32)"
        )


def first_divergence(first: Sequence[int], second: Sequence[int]) -> int | None:
    """The first position where two token sequences differ (a length counts); None if equal."""
    for position, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return position
    return None if len(first) == len(second) else min(len(first), len(second))


async def check_seed_repeat(
    engine: Engine, samples: int = SAMPLES, tokens: int = TOKENS
) -> SeedRepeat:
    """Draw `samples` seeded samples together beside another prompt's, then each seed
    alone, and compare their tokens."""
    spec = SamplingSpec(temperature=1.0, max_tokens=tokens, ignore_eos=True, seed=SEED)
    prompt_ids = await engine.render_chat([{"role": "user", "content": _PROMPT}])
    beside_ids = await engine.render_chat([{"role": "user", "content": _BESIDE}])
    batched, _ = await asyncio.gather(
        engine.generate(prompt_ids, spec, n=samples, request_id="seeds-batched").result(),
        engine.generate(beside_ids, spec, n=samples, request_id="seeds-beside").result(),
    )
    divergence = []
    for index, sample in enumerate(batched.samples):
        alone_spec = spec.replace(seed=spec.sample_seed(index))
        alone = await engine.generate(prompt_ids, alone_spec, request_id=f"seeds-alone-{index}")
        divergence.append(first_divergence(sample.token_ids, alone.samples[0].token_ids))
    return SeedRepeat(engine.info.dtype, divergence)
