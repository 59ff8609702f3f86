"""What every strategy's parameters declare: the contract between a strategy, the service
entry and the benchmark.

The service and `ttscale bench` ask these members instead of probing parameter models
for optional hooks, so a new strategy states what it draws and which verifiers it needs
in one place, and the defaults say what a strategy that declares nothing gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ttscale.engine.types import SamplingSpec
from ttscale.verifiers.structured import AnswerFormat

DEFAULT_SAMPLING = SamplingSpec(temperature=0.8, max_tokens=512)
"""A strategy's `sampling` block when neither the request nor the parameters set it:
diverse samples (T=0.8) are what voting and search need."""

VerifierKind = Literal["outcome", "process"]


@dataclass(frozen=True)
class VerifierUse:
    """A verifier a strategy's parameters name: where (the parameter's path within the
    parameters, e.g. `verifier`), which, and as what (None: either kind)."""

    param: str
    name: str
    kind: VerifierKind | None


class StrategyParams(BaseModel):
    """The base of every strategy's parameter model.

    Subclasses add their own fields and override the members below where the default
    does not describe them. Parameters are immutable and forbid unknown fields: a
    misspelt parameter is an error, not a silent default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale_knob: ClassVar[str | None] = "n"
    """The integer parameter that sets how much the strategy spends: what a benchmark's
    budget N sets (`ttscale bench run --n`); None for a strategy that does not scale."""

    benchmark_baseline: ClassVar[bool] = False
    """Whether this is the plain strategy that a benchmark runs when none is named and
    compares the others against (`registry.baseline`; one strategy says so)."""

    sampling: SamplingSpec = DEFAULT_SAMPLING
    """How each sample is drawn; the request's own sampling fields are its defaults."""

    thinking_decay: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="with a thinking budget: each sample (in draw order) may think this "
        "share of the budget of the one before it, so that the first samples think longest "
        "and a run that stops early has spent its thinking where it counted (1: all alike)",
    )
    answer: AnswerFormat = Field(
        AnswerFormat(),
        description="where a sample's answer comes from: the last boxed answer (default, "
        "grouped by math equivalence), or a JSON field, a regex match, one of fixed options "
        "or a tool call (grouped by exact equality)",
    )
    answer_from_thinking: bool = Field(
        False,
        description="a reasoning model's sample with no answer part (its thought was cut) "
        "votes with the last boxed answer of its thinking; the evidence says which (boxed "
        "answers only)",
    )

    @field_validator("answer_from_thinking")
    @classmethod
    def _thinking_answers_are_boxed(cls, value: bool, info: ValidationInfo) -> bool:
        """A thought's answer is its last boxed draft. Other kinds do not read thoughts: a
        pattern or an option word matches somewhere in most long thoughts, and a thought
        is not JSON, so the fallback would vote noise or nothing; asking for it is an
        error rather than a silent no-op."""
        answer = info.data.get("answer")
        if value and answer is not None and not answer.by_math:
            raise ValueError(
                f"applies to boxed answers only (the last boxed answer of the thinking), "
                f"not to answer kind {answer.kind!r}"
            )
        return value

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.scale_knob is not None and cls.scale_knob not in cls.model_fields:
            raise TypeError(f"{cls.__name__}.scale_knob names no field: {cls.scale_knob!r}")

    def samples_requested(self) -> int | None:
        """The number of whole samples the client asked for in the parameter `n`, which
        the server's `max_n` bounds; None where the parameters have no `n`."""
        return None

    def samples_at_once(self) -> int | None:
        """The most samples one round draws together, which `max_n` bounds too; None
        where no round draws more than `samples_requested`."""
        return None

    def samples_in_all(self) -> int | None:
        """The most whole samples a run draws: a benchmark caps a setting's generated
        tokens at that many times `max_tokens`. None where the count is not fixed in
        advance (step-level search draws steps, not samples)."""
        return self.samples_requested()

    def draws_independent_samples(self) -> bool:
        """Whether every sample is drawn alike and kept (no stop rule, no refinement), so
        that any subset of a run's samples is a run with fewer (what replay assumes)."""
        return False

    def draws_whole_samples(self) -> bool:
        """Whether every sample is drawn whole, in one engine request (what tool calls
        are read from); step-level search and forced continuations draw pieces."""
        return True

    def needs_thought_closes(self) -> bool:
        """Whether the strategy writes a reasoning model's thought close itself, so that
        it needs a server whose reasoning parser marks thoughts with a token."""
        return False

    def verifiers_used(self) -> list[VerifierUse]:
        """The verifiers these parameters name; the service refuses a request naming one
        the server does not have before anything is generated."""
        return []
