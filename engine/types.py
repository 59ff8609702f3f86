"""Value types shared by every engine adapter, strategy and verifier.

They are the whole vocabulary of the engine protocol: a strategy says what to sample
with a `SamplingSpec` and gets back `Sample`s, whichever adapter ran them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

FinishReason = Literal["stop", "length", "abort", "repetition"]
"""Why a sample ended: a stop (token or string), its length, an abort, or vLLM's
`repetition_detection` (a repeated pattern of tokens)."""
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "abort", "repetition")


def _unlimited_as_none(value: object) -> object:
    """vLLM's spelling of no thinking budget, -1, is None here."""
    return None if value == -1 and not isinstance(value, bool) else value


def _clamped_bias(bias: float) -> float:
    """vLLM clamps a logit bias to -100..100, as OpenAI documents the range."""
    return min(100.0, max(-100.0, bias))


def _all_tokens_as_zero(value: object) -> object:
    """vLLM takes -1 and 0 alike for "no top-k filtering": 0 here."""
    return 0 if value == -1 and not isinstance(value, bool) else value


class StructuredOutputs(BaseModel):
    """A constraint on what a sample may say, enforced while it is generated (vLLM's
    structured outputs: `StructuredOutputsParams`, the same fields). At most one of
    `json`, `regex`, `choice`, `grammar`, `json_object` and `structural_tag`."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    json_: str | dict[str, Any] | None = Field(
        None, alias="json", description="a JSON Schema (object or its JSON text)"
    )
    regex: str | None = Field(None, description="a regular expression the text matches")
    choice: tuple[str, ...] | None = Field(None, description="the text is one of these")
    grammar: str | None = Field(None, description="a context-free grammar (EBNF / GBNF)")
    json_object: bool | None = Field(None, description="any JSON object")
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    @model_validator(mode="after")
    def _one_constraint(self) -> StructuredOutputs:
        kinds = ("json_", "regex", "choice", "grammar", "json_object", "structural_tag")
        given = [kind.rstrip("_") for kind in kinds if getattr(self, kind) is not None]
        if len(given) > 1:
            raise ValueError(f"give one structured output constraint, not {', '.join(given)}")
        return self

    def engine_value(self) -> dict[str, Any]:
        """vLLM's `StructuredOutputsParams` fields (what a remote request's body takes)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class ToolCalling(BaseModel):
    """A chat request's tools and how a sample may call them (vLLM's `tools`,
    `tool_choice` and `parallel_tool_calls`). The adapter constrains the sample with
    vLLM's tool-call grammar and reads its calls with vLLM's tool-call parser
    (`tool_calls.py`), as vLLM's server does for a chat request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: tuple[dict[str, Any], ...] = Field(min_length=1, description="OpenAI tool definitions")
    choice: Literal["auto", "required", "function"] = Field(
        "auto",
        description="auto: the model may call; required: it must; function: it calls `function`",
    )
    function: str | None = Field(None, description="the function a `function` choice names")
    parallel: bool | None = Field(
        True, description="false: one call at most (vLLM keeps the first)"
    )

    @model_validator(mode="after")
    def _named_when_function(self) -> ToolCalling:
        if (self.choice == "function") != (self.function is not None):
            raise ValueError("a function tool choice names its function, and only it does")
        return self

    @property
    def forced(self) -> bool:
        """Whether the sample must call a tool (required, or a named function)."""
        return self.choice != "auto"

    def api_choice(self) -> str | dict[str, Any]:
        """The choice as the OpenAI API spells `tool_choice`."""
        if self.function is not None:
            return {"type": "function", "function": {"name": self.function}}
        return self.choice


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call a sample made, as vLLM's parser read it."""

    id: str
    name: str
    arguments: str
    """The arguments as JSON text (what OpenAI's responses carry)."""

    def as_answer(self) -> dict[str, Any]:
        """The call as a structured answer reads it: its name and parsed arguments
        (the JSON text itself where it does not parse)."""
        try:
            arguments = json.loads(self.arguments)
        except ValueError:
            arguments = self.arguments
        return {"name": self.name, "arguments": arguments}


class RepetitionDetection(BaseModel):
    """End a sample once an n-gram of its tokens repeats (vLLM's
    `RepetitionDetectionParams`, the same fields; vLLM checks their ranges)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pattern_size: int = Field(0, description="the longest pattern looked for (0: off)")
    min_pattern_size: int = Field(0, description="the shortest (0: one token)")
    min_count: int = Field(0, description="repeats that end the sample (2 or more)")


class ConfidenceStop(BaseModel):
    """Abort a sample in the engine once its confidence over the last `window` tokens
    falls below `threshold` (DeepConf's online stop, see `confidence.py`).

    The adapter watches the window as tokens arrive and returns the sample with the
    tokens it had (billed like any aborted work), finish reason "abort" and stop reason
    "low_confidence". Only full windows are checked.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(ge=1, le=65536, description="tokens in the sliding window")
    threshold: float = Field(description="stop when the window's mean confidence is below")


class Exposure(Enum):
    """Where a sampling field reaches besides `SamplingSpec` (its `Annotated` metadata).

    A field without a mark is sent to vLLM under its own name and value, in process
    (`SamplingParams`) and remotely (the completion request's body) alike, and is not
    an API request field: that is the one place a new vLLM sampling field needs.
    """

    API = "api"
    """Also a field of the OpenAI API requests, under the same name (`server/api`)."""
    ADAPTER = "adapter"
    """Not sent by name: each engine adapter turns it into what its engine takes
    (seeds per sample, the confidence watch that aborts a sample)."""


API = Exposure.API
ADAPTER = Exposure.ADAPTER


class SamplingSpec(BaseModel):
    """How to sample a completion: the one declaration of sampling fields, from the API
    request to vLLM (see `Exposure` for where each field goes).

    How many completions to draw is not part of it (`Engine.generate(..., n=)`, or a
    strategy's own count), so a strategy's `sampling` block has no knob that would be
    ignored. `logprobs` asks for the top-k next-token log-probabilities at every generated
    position; adapters reduce them to the per-token entropy (see `entropy.py`), the
    per-token confidence (see `confidence.py`) and the sampled token's log-probability
    rather than keeping k numbers per token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: Annotated[float, API] = Field(1.0, ge=0.0, le=2.0, description="0: greedy")
    top_p: Annotated[float, API] = Field(
        1.0, gt=0.0, le=1.0, description="nucleus: sample from the top tokens of this mass"
    )
    top_k: Annotated[int, BeforeValidator(_all_tokens_as_zero), API] = Field(
        0, ge=0, description="sample from the k likeliest tokens (0 or -1: all)"
    )
    min_p: Annotated[float, API] = Field(
        0.0, ge=0.0, le=1.0, description="drop tokens below this share of the top one's"
    )
    repetition_penalty: Annotated[float, API] = Field(
        1.0,
        gt=0.0,
        allow_inf_nan=False,
        description="above 1: penalise tokens of the prompt and the text",
    )
    max_tokens: int = Field(256, ge=1, description="tokens per sample at most")
    min_tokens: Annotated[int, API] = Field(0, ge=0, description="no stop before this many tokens")
    stop: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], API] = Field(
        (), max_length=16, description="strings that end a sample"
    )
    include_stop_str_in_output: Annotated[bool, API] = Field(
        False, description="keep the stop string in the text"
    )
    stop_token_ids: Annotated[tuple[Annotated[int, Field(ge=0)], ...], API] = Field(
        (), max_length=64, description="token ids that end a sample"
    )
    ignore_eos: Annotated[bool, API] = Field(
        False, description="generate past the end-of-sequence token"
    )
    logit_bias: Annotated[
        dict[int, Annotated[float, AfterValidator(_clamped_bias)]] | None, API
    ] = Field(None, description="token id -> bias added to its logit (clamped to -100..100)")
    bad_words: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], API] = Field(
        (), description="words the sample must not generate"
    )
    allowed_token_ids: Annotated[tuple[Annotated[int, Field(ge=0)], ...], API] = Field(
        (), description="sample only these token ids (empty: all)"
    )
    structured_outputs: Annotated[StructuredOutputs | None, API] = Field(
        None, description="constrain the text: a JSON Schema, a regex, a choice, a grammar"
    )
    repetition_detection: Annotated[RepetitionDetection | None, API] = Field(
        None, description="end a sample whose tokens repeat a pattern (finish: repetition)"
    )
    seed: Annotated[int | None, API, ADAPTER] = Field(
        None, description="sample i of a request is seeded seed + i"
    )
    logprobs: int | None = Field(
        None, ge=0, le=20, description="top-k log-probabilities per token (entropy, confidence)"
    )
    prompt_logprobs: Annotated[int | None, API] = Field(
        None,
        ge=-1,
        description="log-probabilities of the prompt's tokens, with this many alternatives",
    )
    keep_logprobs: Annotated[bool, ADAPTER] = Field(
        False,
        description="keep every position's top log-probabilities on the sample, tokens "
        "as vLLM decodes them (the client asked for logprobs)",
    )
    logprob_token_ids: tuple[int, ...] = Field(
        (), max_length=128, description="report these tokens' log-probabilities (judges)"
    )
    presence_penalty: Annotated[float, API] = Field(
        0.0, ge=-2.0, le=2.0, description="penalise tokens already present"
    )
    frequency_penalty: Annotated[float, API] = Field(
        0.0, ge=-2.0, le=2.0, description="penalise tokens by how often they appeared"
    )
    skip_special_tokens: Annotated[bool, API] = Field(
        True, description="leave special tokens out of the text"
    )
    spaces_between_special_tokens: Annotated[bool, API] = Field(
        True, description="a space between adjacent special tokens in the text"
    )
    thinking_token_budget: Annotated[int | None, BeforeValidator(_unlimited_as_none), API] = Field(
        None,
        ge=0,
        validation_alias=AliasChoices("thinking_token_budget", "thinking_budget"),
        description="a reasoning model's thinking tokens per sample: at the budget the "
        "thought is closed and the model answers within max_tokens (-1 or null: none)",
    )
    priority: Annotated[int, API, ADAPTER] = Field(
        0,
        description="scheduling priority, lower first (an engine scheduling first come, "
        "first served ignores it, as vLLM does)",
    )
    confidence_stop: Annotated[ConfidenceStop | None, ADAPTER] = Field(
        None, description="abort the sample when its window confidence drops (needs logprobs)"
    )
    cache_salt: Annotated[str | None, API, ADAPTER] = Field(
        None,
        min_length=1,
        max_length=1024,
        description="salt the prefix cache: prompts with another salt (or none) share no "
        "cached blocks with this one (tenants cannot time each other's prompts)",
    )
    session_id: Annotated[str | None, API, ADAPTER] = Field(
        None,
        min_length=1,
        description="a conversation's stable id, handed to vLLM with each sample (as its "
        "server hands it on)",
    )
    tool_calling: Annotated[ToolCalling | None, ADAPTER] = Field(
        None, description="the tools a sample may call: constrained and read as vLLM does"
    )

    @classmethod
    def by_field_name(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """`raw` with each field's other accepted name (`thinking_budget`) replaced by
        the field's own, so that dicts of fields merge key by key."""
        renamed = dict(raw)
        for name, info in cls.model_fields.items():
            choices = info.validation_alias
            if isinstance(choices, AliasChoices):
                for alias in choices.choices:
                    if isinstance(alias, str) and alias != name and alias in renamed:
                        if name in renamed:
                            raise ValueError(f"give {name} or {alias}, not both")
                        renamed[name] = renamed.pop(alias)
        return renamed

    @classmethod
    def fields_exposed(cls, exposure: Exposure) -> tuple[str, ...]:
        """The fields marked `exposure`, in declaration order."""
        return tuple(name for name, info in cls.model_fields.items() if exposure in info.metadata)

    def engine_fields(self, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every field the engine takes by its own name (all but the `ADAPTER` ones), with
        sequences as lists and empty ones as None (vLLM's "not set"): the shared part of
        vLLM's `SamplingParams` and of a remote completion request. A field nobody set
        (not in `model_fields_set`) takes its value from `defaults` where it has one: the
        model's generation-config defaults, as vLLM's server applies them."""
        adapted = self.fields_exposed(ADAPTER)
        fields = {name: _engine_value(value) for name, value in self if name not in adapted}
        for name, value in (defaults or {}).items():
            if name in fields and name not in self.model_fields_set:
                fields[name] = value
        return fields

    @model_validator(mode="after")
    def _min_below_max(self) -> SamplingSpec:
        # an unset max_tokens is the server's to choose: the service checks it then
        if self.min_tokens > self.max_tokens and "max_tokens" in self.model_fields_set:
            raise ValueError("min_tokens must not exceed max_tokens")
        if self.logprobs is not None and self.logprob_token_ids:
            raise ValueError("ask for either top-k logprobs or logprob_token_ids, not both")
        if self.keep_logprobs and self.logprobs is None:
            raise ValueError("keep_logprobs needs logprobs (0: the sampled token's only)")
        if self.confidence_stop is not None and not self.logprobs:
            raise ValueError("confidence_stop needs top-k logprobs (logprobs >= 1)")
        return self

    def replace(self, **changes: object) -> SamplingSpec:
        """A copy with `changes` (trusted values from code, not client input)."""
        return self.model_copy(update=changes)

    def sample_seed(self, index: int) -> int | None:
        """Seed of the index-th sample: distinct per sample, reproducible per request.

        The one rule for deriving sample seeds, used by the engine for the `n` samples of
        a call and by strategies for the samples they draw one at a time.
        """
        return None if self.seed is None else self.seed + index


def _engine_value(value: object) -> object:
    """A field's value as vLLM takes it: sequences as lists, empty ones as None, a
    structured output constraint as its fields."""
    if isinstance(value, tuple):
        return list(value) or None
    if isinstance(value, StructuredOutputs):
        return value.engine_value()
    if isinstance(value, RepetitionDetection):
        return value.model_dump()
    return value


class PromptRendering(BaseModel):
    """How a request becomes a prompt: the fields of vLLM's requests of the same names,
    with its chat defaults (a text prompt uses `add_special_tokens` only, true by default
    there, as in vLLM). A strategy re-rendering a chat of its own (a judge, a refinement)
    uses the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    add_generation_prompt: bool = Field(True, description="open the assistant's turn")
    continue_final_message: bool = Field(
        False, description="continue the last (assistant) message rather than open a turn"
    )
    add_special_tokens: bool = Field(
        False, description="add the tokenizer's special tokens (BOS) to the rendered prompt"
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra variables of the chat template"
    )
    tools: list[dict[str, Any]] | None = Field(
        None, description="tool definitions the chat template shows the model"
    )
    truncate_prompt_tokens: int | None = Field(
        None, ge=-1, description="keep this many prompt tokens (-1: the context less one)"
    )
    truncation_side: Literal["left", "right"] | None = Field(
        None, description="left: keep the last tokens; right: the first (None: the tokenizer's)"
    )

    @model_validator(mode="after")
    def _one_ending(self) -> PromptRendering:
        if self.add_generation_prompt and self.continue_final_message:
            raise ValueError(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        return self


DEFAULT_RENDERING = PromptRendering()


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token's log-probability at a position, as vLLM reports it."""

    token: str
    """The token as vLLM decodes it (what its server's responses show)."""
    logprob: float | None
    """None for a prompt's first token, which nothing predicts."""
    token_id: int | None = None
    """Where the engine says (in process, and for prompt tokens)."""
    rank: int | None = None
    """Where the engine says (in process, and for prompt tokens)."""


Position = tuple[TokenLogprob, ...]
"""A position's log-probabilities in vLLM's order: the sampled token first, then the
top-k by rank (the sampled one once, if it is among them)."""


@dataclass(slots=True)
class Sample:
    """One finished (or aborted) completion and what it cost."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    token_logprobs: list[float] | None = None
    token_entropies: list[float] | None = None
    token_confidences: list[float] | None = None
    """Per position, -mean of the top-k log-probabilities (when `logprobs` was asked)."""
    label_logprobs: list[dict[int, float]] | None = None
    """Per position, the log-probabilities of `SamplingSpec.logprob_token_ids`."""
    position_logprobs: list[Position] | None = None
    """Per generated position, with `SamplingSpec.keep_logprobs`: what the client sees."""
    prompt_logprobs: list[Position] | None = None
    """Per prompt position, with `SamplingSpec.prompt_logprobs`: the prompt token first
    (the first one with no log-probability), then the likeliest."""
    reasoning: str | None = None
    """The thinking of a reasoning model's sample (see `reasoning.py`), else None."""
    content: str | None = None
    """The answer part when the engine splits thinking from answers (empty while the
    thought is open), else None: then the whole text is the answer."""
    reasoning_tokens: int = 0
    thinking_span: int = 0
    """Generated positions up to the thought's close (0: no thinking): what confidence
    and entropy read, the thinking trace."""
    tool_calls: list[ToolCall] | None = None
    """The calls read from the sample when it was drawn with `tool_calling` (then its
    `content` is what precedes them); None: not read for calls."""

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def answer_text(self) -> str:
        """What answers, votes and verifiers read: the calls the sample made (a JSON
        list of name and arguments), else the answer part, or the whole text."""
        if self.tool_calls:
            return json.dumps([call.as_answer() for call in self.tool_calls])
        return self.text if self.content is None else self.content

    def thinking(self, per_token: list[float] | None) -> list[float] | None:
        """The thinking positions of a per-token series (all of it when no thinking)."""
        if per_token is None or not self.thinking_span:
            return per_token
        return per_token[: self.thinking_span]

    @property
    def mean_entropy(self) -> float | None:
        """Mean top-k entropy over the thinking trace (the whole sample without one)."""
        entropies = self.thinking(self.token_entropies)
        if not entropies:
            return None
        return sum(entropies) / len(entropies)

    @property
    def mean_logprob(self) -> float | None:
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)


@dataclass(slots=True)
class GenerationResult:
    """All samples of one `generate` call, in index order, and their totals."""

    request_id: str
    prompt_tokens: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def generated_tokens(self) -> int:
        return sum(s.num_tokens for s in self.samples)

    @property
    def cached_prompt_tokens(self) -> int:
        return sum(s.cached_prompt_tokens for s in self.samples)

    @property
    def aborted(self) -> list[Sample]:
        return [s for s in self.samples if s.finish_reason == "abort"]


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Architecture numbers the budget needs for its FLOPs estimate."""

    num_params: int
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int


@dataclass(slots=True)
class EngineStats:
    """The engine's load as its scheduler last saw it (for operators' metrics)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    """Fraction of the KV cache in use, 0..1 (the mean over replicas, remotely)."""
    prefix_cache_queries: int = 0
    """Prompt tokens looked up in the prefix cache since start (a counter)."""
    prefix_cache_hits: int = 0


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What a served model is, as the API and the budget need to know it."""

    model_name: str
    max_model_len: int
    backend: str
    model_path: str | None = None
    shape: ModelShape | None = None
    dtype: str | None = None
    """The weights dtype the engine computes in, where it is known."""
    max_token_id: int | None = None
    """The largest token id a prompt may hold, where it is known."""
    reasoning_parser: str | None = None
    """The vLLM reasoning parser that splits thinking from answers (None: no thinking)."""
    thinking_budgets: bool = False
    """Whether the engine can close a thought at a thinking budget (vLLM can where the
    parser names the strings that open and close a thought)."""
    thought_closes: tuple[int, ...] = ()
    """The token ids that close a thought, where the parser marks thoughts by tokens:
    what budget forcing stops at, suppresses and writes."""
    truncation_side: Literal["left", "right"] = "right"
    """The side the tokenizer truncates from (`truncation_side` of its configuration,
    right by default as in transformers): where `truncate_prompt_tokens` cuts unless a
    request names a side."""
    tool_call_parser: str | None = None
    """The vLLM tool-call parser that reads samples' calls (None: tools are only shown
    to the model, and `tool_choice` other than none is refused)."""
    auto_tool_choice: bool = False
    """Whether the model may choose to call a tool (`tool_choice` auto), as vLLM's
    `--enable-auto-tool-choice`."""
    sampling_defaults: tuple[tuple[str, Any], ...] = ()
    """The model's generation-config sampling defaults (vLLM's, e.g. a recommended
    temperature and top_k), which fill the fields a request leaves unset, as vLLM's server
    fills them. Known in process; a remote server applies its own."""
