"""One budget unit for every strategy: tokens (policy and verifier apart) and FLOPs.

A request may cap generated tokens, verifier tokens, samples and wall time. Caps are
enforced by *reservation*: a sample may only start with a `max_tokens` that fits in
what is left after every running sample's reservation, so the generated-token cap holds
even if every running sample runs to its limit. When a sample ends, its unused
reservation returns to the pool. Aborted work is billed like finished work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ttscale.engine.types import ModelShape, Sample
from ttscale.verifiers.protocol import VerifierUsage

from .flops import forward_flops, sample_flops


class BudgetLimits(BaseModel):
    """Caps a request may set; None means no cap (server limits still apply)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_generated_tokens: int | None = Field(None, ge=1)
    max_verifier_tokens: int | None = Field(None, ge=0)
    max_samples: int | None = Field(None, ge=1)
    max_wall_s: float | None = Field(None, gt=0)


class Spending(BaseModel):
    """What a request spent. Generated tokens include aborted partial samples."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    aborted_tokens: int = 0
    verifier_prompt_tokens: int = 0
    verifier_cached_tokens: int = 0
    verifier_generated_tokens: int = 0
    samples_started: int = 0
    samples_finished: int = 0
    samples_aborted: int = 0
    policy_flops: float = 0.0
    verifier_flops: float = 0.0
    wall_s: float = 0.0

    @property
    def verifier_tokens(self) -> int:
        """Verifier tokens computed: uncached prompt tokens plus generated ones."""
        return (
            self.verifier_prompt_tokens
            - self.verifier_cached_tokens
            + self.verifier_generated_tokens
        )

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        """Share of the policy prompt tokens served from the engine's prefix cache
        (None before any prompt): continuing from token ids keeps it near 1."""
        if self.prompt_tokens == 0:
            return None
        return round(self.cached_prompt_tokens / self.prompt_tokens, 4)

    @property
    def total_flops(self) -> float:
        return self.policy_flops + self.verifier_flops


@dataclass(frozen=True, slots=True)
class Reservation:
    max_tokens: int


class Budget:
    """Tracks one request's spending against its limits. Not shared between requests."""

    def __init__(
        self,
        limits: BudgetLimits,
        policy_shape: ModelShape | None = None,
        verifier_shape: ModelShape | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.usage = Spending()
        self._policy_shape = policy_shape
        self._verifier_shape = verifier_shape
        self._clock = clock
        self._started_at = clock()
        self._reserved_tokens = 0
        self._running = 0

    # --- time ---------------------------------------------------------------------
    def elapsed_s(self) -> float:
        return self._clock() - self._started_at

    def time_left_s(self) -> float | None:
        if self.limits.max_wall_s is None:
            return None
        return max(0.0, self.limits.max_wall_s - self.elapsed_s())

    # --- policy samples -------------------------------------------------------------
    def tokens_left(self) -> int | None:
        """Generated tokens still free to reserve (None: no cap)."""
        cap = self.limits.max_generated_tokens
        if cap is None:
            return None
        return max(0, cap - self.usage.generated_tokens - self._reserved_tokens)

    def samples_left(self) -> int | None:
        cap = self.limits.max_samples
        return None if cap is None else max(0, cap - self.usage.samples_started)

    def reserve(self, max_tokens: int, min_tokens: int = 1) -> Reservation | None:
        """Reserve room for one sample of up to `max_tokens`; None if the budget says no.

        The grant may be smaller than asked (down to `min_tokens`) when only that much
        is left: the sample then ends early with finish reason "length".
        """
        if self.samples_left() == 0:
            return None
        if self.time_left_s() == 0.0:
            return None
        left = self.tokens_left()
        grant = max_tokens if left is None else min(max_tokens, left)
        if grant < max(1, min_tokens):
            return None
        self._reserved_tokens += grant
        self._running += 1
        self.usage.samples_started += 1
        return Reservation(grant)

    def settle(self, reservation: Reservation, sample: Sample) -> None:
        """Bill a finished or aborted sample and release its unused reservation."""
        self._reserved_tokens -= reservation.max_tokens
        self._running -= 1
        usage = self.usage
        usage.prompt_tokens += sample.prompt_tokens
        usage.cached_prompt_tokens += sample.cached_prompt_tokens
        usage.generated_tokens += sample.num_tokens
        if sample.finish_reason == "abort":
            usage.samples_aborted += 1
            usage.aborted_tokens += sample.num_tokens
        else:
            usage.samples_finished += 1
        usage.policy_flops += sample_flops(
            self._policy_shape,
            sample.prompt_tokens,
            sample.cached_prompt_tokens,
            sample.num_tokens,
        )

    # --- verifier -------------------------------------------------------------------
    def verifier_tokens_left(self) -> int | None:
        cap = self.limits.max_verifier_tokens
        return None if cap is None else max(0, cap - self.usage.verifier_tokens)

    def can_verify(self, tokens: int) -> bool:
        left = self.verifier_tokens_left()
        return left is None or tokens <= left

    def charge_verifier(self, usage: VerifierUsage) -> None:
        self.usage.verifier_prompt_tokens += usage.prompt_tokens
        self.usage.verifier_cached_tokens += usage.cached_prompt_tokens
        self.usage.verifier_generated_tokens += usage.generated_tokens
        shape = self._verifier_shape or self._policy_shape
        computed = usage.prompt_tokens - usage.cached_prompt_tokens + usage.generated_tokens
        self.usage.verifier_flops += forward_flops(shape, usage.cached_prompt_tokens, computed)

    def finish(self) -> Spending:
        self.usage.wall_s = round(self.elapsed_s(), 4)
        return self.usage
