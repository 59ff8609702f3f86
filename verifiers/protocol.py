"""What strategies may ask of a verifier, and what verifying cost.

Verifier work is billed in the budget's verifier tokens, separately from policy tokens:
every scorer returns a `VerifierUsage` with its scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ttscale.engine.types import ModelShape


@dataclass(frozen=True, slots=True)
class VerifierUsage:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Tokens the verifier computed: uncached prompt tokens plus generated ones."""
        return self.prompt_tokens - self.cached_prompt_tokens + self.generated_tokens

    def __add__(self, other: VerifierUsage) -> VerifierUsage:
        return VerifierUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
            self.generated_tokens + other.generated_tokens,
        )


@dataclass(frozen=True, slots=True)
class OutcomeScores:
    scores: list[float]
    """One score in [0, 1] per solution."""
    usage: VerifierUsage


@dataclass(frozen=True, slots=True)
class StepScores:
    scores: list[list[float]]
    """Per solution, one score in [0, 1] per step."""
    usage: VerifierUsage


@runtime_checkable
class Verifier(Protocol):
    """What every verifier says of itself and how it stops."""

    def describe(self) -> dict[str, str]:
        """What `/v1/verifiers` lists beside the name: model, backend, input format."""
        ...

    @property
    def shape(self) -> ModelShape | None:
        """The scoring model's architecture, for the budget's FLOPs estimate (None: the
        policy model's, as for a judge that scores with the policy's engine)."""
        ...

    async def close(self) -> None:
        """Stop what this verifier runs itself (a reward model's engine); idempotent."""
        ...


@runtime_checkable
class OutcomeVerifier(Verifier, Protocol):
    """Scores whole solutions (ORM, or a judge asked about the whole solution)."""

    async def score_outcomes(
        self, question: str, solutions: Sequence[str], *, request_id: str | None = None
    ) -> OutcomeScores:
        """Scores of whole solutions; engine requests carry ids derived from `request_id`."""
        ...

    async def estimate_outcome_tokens(self, question: str, solutions: Sequence[str]) -> int:
        """Upper bound of the verifier tokens `score_outcomes` would spend."""
        ...


@runtime_checkable
class ProcessVerifier(Verifier, Protocol):
    """Scores each step of each solution (PRM, or a judge asked step by step)."""

    async def score_steps(
        self,
        question: str,
        solutions: Sequence[Sequence[str]],
        *,
        last_only: bool = False,
        request_id: str | None = None,
    ) -> StepScores:
        """Scores of each step; engine requests carry ids derived from `request_id`."""
        ...

    async def estimate_step_tokens(
        self, question: str, solutions: Sequence[Sequence[str]], *, last_only: bool = False
    ) -> int:
        """Upper bound of the verifier tokens `score_steps` would spend."""
        ...
