"""Pydantic models of the OpenAI-compatible API surface.

Requests forbid unknown fields: a misspelt parameter silently ignored is a wrong answer
the user never hears about.
"""

from __future__ import annotations

import json
import time
import typing
import uuid
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from ttscale.engine.types import API, Position, PromptRendering, SamplingSpec
from ttscale.strategies.budget import Spending
from ttscale.strategies.errors import InvalidRequest, first_problem
from ttscale.strategies.service import Choice, ServiceRequest
from ttscale.strategies.strategy_choice import StrategyChoice, split_model_name

from .logprobs import ChatLogprobs, CompletionLogprobs


def _encodable(text: str) -> str:
    """Lone surrogates (`"\\ud800"` in JSON) are not text: refuse them here, by name,
    rather than fail deep in a tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("not valid Unicode text (a lone surrogate?)") from exc
    return text


def _integral(value: Any) -> Any:
    """JSON has one number type, and JSON Schema calls 2.0 an integer: take it as 2.
    `true` and `"2"` are still refused (the models are strict)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, AfterValidator(_encodable)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_encodable)]
# Integers: bounds first (so that the OpenAPI description states them), then `_integral`.
# `lt=2**63` rather than `le=2**63 - 1`: a JSON number states 2**63 exactly.
TokenId = Annotated[int, Field(ge=0, lt=2**31), BeforeValidator(_integral)]
Seed = Annotated[int, Field(ge=0, lt=2**63), BeforeValidator(_integral)]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no true for 1
    type: Literal["text"]
    text: Text


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Text
    arguments: Text = Field(description="the arguments as JSON text")


class MessageToolCall(BaseModel):
    """A tool call an assistant message made (earlier in the conversation)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: Text
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no true for 1
    role: Literal["system", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = Field(
        None, description="required but for an assistant message that made tool calls"
    )
    name: Text | None = None
    tool_calls: list[MessageToolCall] | None = Field(None, description="assistant messages")
    tool_call_id: Text | None = Field(None, description="tool messages: the call answered")

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (but for an assistant's tool calls)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, Any]:
        """The message in OpenAI's shape, its content as text (None: none)."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.content is None:
            message["content"] = None
        extra = self.model_dump(include={"name", "tool_calls", "tool_call_id"}, exclude_none=True)
        return {**message, **extra}


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Text
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionDefinition


class ToolName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Text


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: ToolName


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`, as vLLM reads it: a shorthand for `structured_outputs`
    (`json_object`: any JSON object; `json_schema`: its schema; `structural_tag`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: JsonSchemaFormat | None = None
    format: Any = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError(
                "When response_format type is 'json_schema', the 'json_schema' field must "
                "be provided."
            )
        if self.type == "structural_tag" and self.format is None:
            raise ValueError("a structural_tag response_format needs its `format`")
        return self

    def constraint(self) -> dict[str, Any]:
        """The structured output fields this format sets (none for "text")."""
        if self.type == "json_object":
            return {"json_object": True}
        if self.type == "json_schema":
            assert self.json_schema is not None
            return {"json": self.json_schema.json_schema}
        if self.type == "structural_tag":
            return {"structural_tag": json.dumps({"type": self.type, "format": self.format})}
        return {}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no true for 1
    include_usage: bool = False


@dataclass(frozen=True)
class Thinking:
    """How a response shows a reasoning model's thinking."""

    counted: bool = False
    """The usage counts thinking tokens (`completion_tokens_details.reasoning_tokens`)."""
    shown: bool = False
    """The thinking goes into the message (`reasoning`, `reasoning_content`)."""


NO_THINKING = Thinking()
"""A response that shows no thinking (a model without a reasoning parser)."""


@dataclass(frozen=True)
class Shown:
    """What a response shows of a run besides its text, as the client asked."""

    thinking: Thinking = NO_THINKING
    logprobs: int | None = None
    """Alternatives per position of each choice's log-probabilities (None: none)."""
    prompt_logprobs: bool = False
    echo: str | None = None
    """The prompt's text, which a text completion's choices start with (`echo`)."""
    echo_only: bool = False
    """`echo` with `max_tokens` 0: each choice is the prompt alone (it is scored)."""
    prompt_token_ids: list[int] | None = None
    """With `return_token_ids`: the prompt's token ids (and each choice shows its own)."""
    request_id: str | None = None
    """The client's `request_id`: the response's id is built on it, as in vLLM."""

    def response_id(self, kind: str) -> str:
        """`chatcmpl-...` or `cmpl-...`: on the client's request id, else a new one."""
        return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{self.request_id or uuid.uuid4().hex}"

    def token_ids_of(self, choice: Choice) -> list[int] | None:
        return choice.token_ids if self.prompt_token_ids is not None else None

    def content_of(self, content: str | None) -> str | None:
        """A chat message's content: after the echoed last message, as in vLLM."""
        if not self.echo:
            return content
        return self.echo + (content or "")

    def text_of(self, choice: Choice) -> str:
        """A text completion's text: after the prompt with `echo`, as in vLLM (the prompt
        alone when it is only scored)."""
        if self.echo is None:
            return choice.text
        return self.echo if self.echo_only else self.echo + choice.text

    def scored_prompt(self, choice: Choice) -> PromptLogprobs | None:
        """The `prompt_logprobs` field, when the client asked for it."""
        return prompt_logprobs_of(choice.prompt_logprobs) if self.prompt_logprobs else None

    def positions_of(self, choice: Choice) -> list[Position] | None:
        """A text completion's log-probabilities: the prompt's first with `echo`."""
        if self.echo is None or choice.prompt_logprobs is None:
            return choice.logprobs
        if self.echo_only:
            return choice.prompt_logprobs
        return [*choice.prompt_logprobs, *(choice.logprobs or [])]


PLAIN = Shown()


NOT_SERVED: dict[str, str] = {
    **dict.fromkeys(
        ("media_io_kwargs", "mm_processor_kwargs", "mm_payload", "return_mm_kwargs"),
        "multimodal inputs are not served here (text models only)",
    ),
    "prompt_embeds": "prompts are text or token ids here, not embeddings",
    **dict.fromkeys(
        ("kv_transfer_params", "ec_transfer_params"),
        "disaggregated prefill is configured on the vLLM servers behind ttscale, not per request",
    ),
    "use_beam_search": "beam search is not served; see the step_search strategy",
    "length_penalty": "a beam search parameter; beam search is not served",
    "chat_template": "a request's own chat template is refused, as vLLM's server refuses "
    "it without --trust-request-chat-template",
    "vllm_xargs": "custom logits processors are not configured here",
    "watermarking": "no watermarking is configured here",
    "routed_experts_prompt_start": "not served here (mixture-of-experts routing traces)",
}
"""vLLM request fields that have no meaning on this server, with the reason a 400 gives."""

NOT_YET_SERVED = frozenset(
    {
        "logprob_token_ids",
        "truncate_prompt_tokens",
        "truncation_side",
        "session_id",
        "return_tokens_as_token_ids",
        "return_token_offsets",
        "return_prompt_text",
        "cache_salt",
        "repetition_detection",
        "stream_interval",
        "suffix",
    }
)
"""vLLM request fields that would make sense here but are not served yet: a 400
"unsupported parameter" until they are (the parity test holds the list to vLLM's)."""


def _as_list(value: str | list[str] | None) -> list[str]:
    """One stop sequence or a list of them (at most 16, none empty): a list."""
    return [value] if isinstance(value, str) else list(value or [])


_API_TYPES: dict[str, Any] = {
    "seed": (Seed | None, None),
    "thinking_token_budget": (
        Annotated[int | None, Field(ge=-1)],
        Field(
            None,
            validation_alias=AliasChoices("thinking_token_budget", "thinking_budget"),
            description="a reasoning model's thinking tokens per sample: at the budget the "
            "thought is closed and the model answers within max_tokens (-1 or null: none; "
            "`thinking_budget` is accepted too)",
        ),
    ),
    "logit_bias": (
        dict[str, float] | None,
        Field(None, description="token id (as a string) -> bias added to its logit, -100..100"),
    ),
    "stop": (
        Annotated[
            NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=16)] | None,
            AfterValidator(_as_list),
        ],
        None,
    ),
}
"""API types of sampling fields whose JSON shape differs from `SamplingSpec`'s own."""


def _api_sampling_fields() -> dict[str, Any]:
    """The sampling fields of the API requests: those `SamplingSpec` marks `API`, with
    its types and bounds (sequences as JSON arrays) unless `_API_TYPES` says otherwise."""
    fields: dict[str, Any] = {}
    for name in SamplingSpec.fields_exposed(API):
        info = SamplingSpec.model_fields[name]
        if name in _API_TYPES:
            fields[name] = _API_TYPES[name]
            continue
        annotation = info.annotation
        if typing.get_origin(annotation) is tuple:
            annotation = list[typing.get_args(annotation)[0]]  # type: ignore[valid-type]
        fields[name] = (annotation, FieldInfo.merge_field_infos(info, annotation=annotation))
    return fields


class _RequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no true for 1

    model: str = Field(
        ..., min_length=1, description="the served model, optionally `MODEL:STRATEGY?k=v&...`"
    )


_SamplingFields = create_model(  # type: ignore[call-overload]
    "_SamplingFields", __base__=_RequestBase, **_api_sampling_fields()
)


class SamplingRequest(_SamplingFields):  # type: ignore[misc, valid-type]
    """Fields shared by chat and text completion requests: the sampling fields that
    `SamplingSpec` marks for the API, and the request's own."""

    max_tokens: PositiveInt | None = Field(
        None, description="tokens per sample; default: the server's, clipped to the context"
    )
    n: PositiveInt = Field(1, description="choices (plain requests); a strategy returns one")
    stream: bool = Field(False, description="server-sent events, with progress events")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted and ignored")
    return_token_ids: bool | None = Field(
        None, description="each choice's token ids, and the prompt's (as vLLM returns them)"
    )
    request_id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="the response's id is `chatcmpl-` or `cmpl-` and this, as in vLLM"
    )
    response_format: ResponseFormat | None = Field(
        None, description="JSON output: a shorthand for `structured_outputs`, as in vLLM"
    )
    ttscale: StrategyChoice | None = Field(
        None, description="test-time-scaling strategy, parameters and budget"
    )

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def max_tokens_param(self) -> str:
        return "max_tokens"

    def field_name(self, path: str) -> str:
        """What this request calls the service's field `path` (see `api_field_name`)."""
        return api_field_name(path, self.max_tokens_param)

    def returned_logprobs(self) -> int | None:
        """How many alternatives per position the client asked to see (None: no logprobs)."""
        return None

    def echo_scores(self) -> int | None:
        """The prompt log-probabilities (alternatives per position) that `echo` asks for
        where `prompt_logprobs` is not given, as vLLM reads it; None: none."""
        return None

    @property
    def scores_prompt(self) -> bool:
        return self.prompt_logprobs is not None or self.echo_scores() is not None

    def shown(self, reasoning_parser: str | None, prompt_text: str, prompt: list[int]) -> Shown:
        """What the response shows besides the text (`prompt`: the prompt's token ids)."""
        return Shown(
            thinking=self.thinking(reasoning_parser),
            logprobs=self.returned_logprobs(),
            prompt_logprobs=self.scores_prompt,
            prompt_token_ids=prompt if self.return_token_ids else None,
            request_id=self.request_id,
        )

    def sampling_spec(self) -> SamplingSpec:
        """The request's sampling fields as the one sampling type; only the fields the
        client set are set on it (`model_fields_set`), so a strategy keeps its own
        defaults for the rest."""
        api_fields = SamplingSpec.fields_exposed(API)
        given = {f: getattr(self, f) for f in api_fields if f in self.model_fields_set}
        if self.requested_max_tokens is not None:
            given["max_tokens"] = self.requested_max_tokens
        shown = self.returned_logprobs()
        if shown is not None:
            given.update(logprobs=shown, keep_logprobs=True)
        if self.prompt_logprobs is None and self.echo_scores() is not None:
            given["prompt_logprobs"] = self.echo_scores()
        if self.prompt_logprobs is not None and self.stream:  # vLLM's rule and words
            raise InvalidRequest(
                "`prompt_logprobs` are not available when `stream=True`.", param="prompt_logprobs"
            )
        if self.response_format is not None and self.response_format.constraint():
            # as vLLM: the format's constraint replaces the one of structured_outputs
            constrained = given.get("structured_outputs") or {}
            given["structured_outputs"] = {**constrained, **self.response_format.constraint()}
        try:
            return SamplingSpec(**given)
        except ValidationError as exc:  # a rule across fields (min_tokens <= max_tokens)
            where, message, _ = first_problem(exc)
            # the request field (`logit_bias`, not a key in it); the one rule across
            # fields of the API is min_tokens <= max_tokens
            raise InvalidRequest(message, param=where.split(".")[0] or "min_tokens") from exc

    def service_request(self, request_id: str) -> ServiceRequest:
        """What the service entry takes; the strategy comes from the `ttscale` field or
        the model-name suffix, not both."""
        model, from_suffix = split_model_name(self.model)
        if from_suffix is not None and self.ttscale is not None:
            raise InvalidRequest(
                "choose the strategy either in the model name or in ttscale, not both",
                param="model",
            )
        if (from_suffix or self.ttscale) is not None and self.scores_prompt:
            raise InvalidRequest(
                "the prompt's log-probabilities are for plain requests: every sample of a "
                "strategy would score the prompt again",
                param="prompt_logprobs" if self.prompt_logprobs is not None else "echo",
            )
        return ServiceRequest(
            request_id=request_id,
            model=model,
            sampling=self.sampling_spec(),
            n=self.n,
            choice=from_suffix or self.ttscale,
            **self.prompt_fields(),
        )

    def prompt_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def thinking(self, reasoning_parser: str | None) -> Thinking:
        """How the response shows a reasoning model's thinking: not at all in a text
        completion, which is the whole text, as in vLLM's server."""
        return NO_THINKING


def api_field_name(path: str, max_tokens_param: str = "max_tokens") -> str:
    """The API request field that a service field path (`ServiceRequest`'s structure, see
    `ttscale.strategies.errors`) stands for: the strategy choice is the `ttscale` field,
    the sampling fields sit at the top, and the length field is the one the client used."""
    if path == "choice" or path.startswith("choice."):
        return "ttscale" + path.removeprefix("choice")
    if path == "sampling.max_tokens":
        return max_tokens_param
    return path.removeprefix("sampling.").removeprefix("rendering.")


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(
        ..., min_length=1, description="rendered with the model's own chat template"
    )
    max_completion_tokens: PositiveInt | None = Field(
        None, description="the newer name of `max_tokens`; wins when both are given"
    )
    include_reasoning: bool = Field(
        True, description="false: leave a reasoning model's thinking out of the response"
    )
    echo: bool = Field(
        False, description="the reply's content starts with the last message when it continues it"
    )
    tools: list[ToolDefinition] | None = Field(
        None, description="tools the chat template shows the model (calls: not parsed yet)"
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description='"none" (default without tools); others need a tool-call parser'
    )
    parallel_tool_calls: bool | None = Field(True, description="as in vLLM")
    logprobs: bool = Field(False, description="return each generated token's log-probability")
    top_logprobs: int | None = Field(
        None, ge=-1, description="with this many likeliest alternatives (needs logprobs)"
    )
    add_generation_prompt: bool = Field(True, description="open the assistant's turn")
    continue_final_message: bool = Field(
        False, description="continue the last (assistant) message instead of a new turn"
    )
    add_special_tokens: bool = Field(
        False, description="add the tokenizer's special tokens (BOS) to the rendered chat"
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="variables of the chat template (e.g. enable_thinking)"
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        Field(None, description="a chat template variable, as in vLLM (and enable_thinking)")
    )
    documents: list[dict[str, Text]] | None = Field(
        None, description="documents for a template that takes them (RAG), as in vLLM"
    )

    def thinking(self, reasoning_parser: str | None) -> Thinking:
        """On a server with a reasoning parser: thinking tokens counted in the usage, the
        thinking apart from the content unless `include_reasoning` is false."""
        if reasoning_parser is None:
            return NO_THINKING
        return Thinking(counted=True, shown=self.include_reasoning)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def returned_logprobs(self) -> int | None:
        if self.top_logprobs and not self.logprobs:  # vLLM's rule and words
            raise InvalidRequest(
                "when using `top_logprobs`, `logprobs` must be set to true.",
                param="top_logprobs",
            )
        return (self.top_logprobs or 0) if self.logprobs else None

    def echo_scores(self) -> int | None:
        """As vLLM: a chat `echo` scores the prompt with `top_logprobs` alternatives."""
        return (self.top_logprobs or 0) if self.echo else None

    def shown(self, reasoning_parser: str | None, prompt_text: str, prompt: list[int]) -> Shown:
        """As vLLM: `echo` starts the content with the last message when the reply
        continues its role (with `add_generation_prompt`, an assistant message)."""
        shown = super().shown(reasoning_parser, prompt_text, prompt)
        last = self.messages[-1]
        continued = last.role == "assistant" or not self.add_generation_prompt
        return replace(shown, echo=last.text() if self.echo and continued else None)

    def template_variables(self) -> dict[str, Any]:
        """`chat_template_kwargs` with the request fields that are template variables,
        as vLLM merges them: the fields win, and a reasoning effort other than "none"
        turns thinking on unless the client set `enable_thinking` itself."""
        variables = dict(self.chat_template_kwargs or {})
        fields = {"documents": self.documents, "reasoning_effort": self.reasoning_effort}
        variables.update({name: value for name, value in fields.items() if value is not None})
        if self.reasoning_effort is not None:
            variables.setdefault("enable_thinking", self.reasoning_effort != "none")
        return variables

    @property
    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    def prompt_fields(self) -> dict[str, Any]:
        self._check_tools()
        tools = [tool.model_dump(exclude_none=True) for tool in self.tools or []]
        try:
            rendering = PromptRendering(
                add_generation_prompt=self.add_generation_prompt,
                continue_final_message=self.continue_final_message,
                add_special_tokens=self.add_special_tokens,
                chat_template_kwargs=self.template_variables(),
                tools=tools or None,
            )
        except ValidationError as exc:
            raise InvalidRequest(first_problem(exc)[1], param="continue_final_message") from exc
        return {"messages": [m.for_template() for m in self.messages], "rendering": rendering}

    def _check_tools(self) -> None:
        """vLLM's rules for tools, and its refusals on a server that parses no tool calls
        (vLLM's without `--tool-call-parser`): tools are shown to the model, and a reply
        is text (`tool_choice` "none")."""
        if self.tools == []:
            raise InvalidRequest(
                "`tools` must not be an empty array. Either provide at least one tool or "
                "omit the field entirely.",
                param="tools",
            )
        choice = self.tool_choice or ("auto" if self.tools else "none")
        if choice == "none":
            return
        if not self.tools:
            raise InvalidRequest(
                "When using `tool_choice`, `tools` must be set.", param="tool_choice"
            )
        if isinstance(choice, NamedToolChoice):
            if choice.function.name not in {tool.function.name for tool in self.tools}:
                raise InvalidRequest(
                    "The tool specified in `tool_choice` does not match any of the specified "
                    "`tools`",
                    param="tool_choice",
                )
            raise InvalidRequest(
                f'tool_choice=function "{choice.function.name}" requires --tool-call-parser '
                "to be set (this server parses no tool calls yet)"
            )
        if choice == "auto":
            raise InvalidRequest(
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
                "to be set (this server parses no tool calls yet)"
            )
        raise InvalidRequest(
            f'tool_choice="{choice}" requires --tool-call-parser to be set (this server '
            "parses no tool calls yet)"
        )


class CompletionRequest(SamplingRequest):
    """`/v1/completions`: a raw prompt (text or token ids), no chat template."""

    prompt: NonEmptyText | Annotated[list[TokenId], Field(min_length=1)] = Field(
        ..., description="text, or token ids; no chat template"
    )

    add_special_tokens: bool = Field(
        True, description="a text prompt gets the tokenizer's special tokens (BOS), as in vLLM"
    )
    logprobs: int | None = Field(
        None, ge=-1, description="return each token's log-probability and this many alternatives"
    )
    echo: bool = Field(
        False,
        description="each choice starts with the prompt (with logprobs: the prompt's too; "
        "with max_tokens 0: the prompt alone, scored)",
    )
    max_tokens: Annotated[int, Field(ge=0), BeforeValidator(_integral)] | None = Field(
        None, description="tokens per sample; 0 with echo: score the prompt only"
    )

    @property
    def requested_max_tokens(self) -> int | None:
        if self.max_tokens == 0:
            if not self.echo:  # vLLM's words
                raise InvalidRequest("max_tokens must be at least 1, got 0.", param="max_tokens")
            return 1  # vLLM generates one token and shows none of it
        return self.max_tokens

    def returned_logprobs(self) -> int | None:
        return self.logprobs

    def shown(self, reasoning_parser: str | None, prompt_text: str, prompt: list[int]) -> Shown:
        """As vLLM: `echo` shows the prompt's log-probabilities with the text's, and no
        prompt text with `return_token_ids` (the ids say it)."""
        shown = super().shown(reasoning_parser, prompt_text, prompt)
        echoed = "" if self.return_token_ids else prompt_text
        return replace(
            shown,
            echo=echoed if self.echo else None,
            echo_only=self.echo and self.max_tokens == 0,
        )

    def echo_scores(self) -> int | None:
        """With `echo` and `logprobs`, the echoed prompt has its log-probabilities too."""
        return self.logprobs if self.echo else None

    def prompt_fields(self) -> dict[str, Any]:
        rendering = PromptRendering(add_special_tokens=self.add_special_tokens)
        return {"prompt": self.prompt, "rendering": rendering}


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    """OpenAI usage, counted as the budget counts: a strategy's `prompt_tokens` are the
    prompt tokens of every engine request made for it (a sample of N reads its prompt N
    times; a plain request counts its prompt once, as vLLM's server does),
    `cached_tokens` the part of those served from the prefix cache (never more than
    `prompt_tokens`), `completion_tokens` every token generated, aborted samples'
    included. Verifier tokens are reported in the `ttscale` evidence."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = Field(
        None, description="with a reasoning parser: the thinking tokens among them"
    )

    @classmethod
    def of(cls, spent: Spending, *, reasoning: bool = False) -> Usage:
        """The usage of what was spent; `reasoning` (a server with a reasoning parser)
        adds the thinking tokens, as vLLM's server does."""
        details = CompletionTokensDetails(reasoning_tokens=spent.reasoning_tokens)
        return cls(
            prompt_tokens=spent.prompt_tokens,
            completion_tokens=spent.generated_tokens,
            total_tokens=spent.prompt_tokens + spent.generated_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=spent.cached_prompt_tokens),
            completion_tokens_details=details if reasoning else None,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(
        description="the answer; null for a reasoning model's sample without an answer part"
    )
    reasoning: str | None = Field(
        None, description="a reasoning model's thinking (vLLM's name for it)"
    )
    reasoning_content: str | None = Field(
        None, description="the same thinking, under the name older clients read"
    )

    @classmethod
    def of(cls, choice: Choice, shown: Shown = PLAIN) -> AssistantMessage:
        """A choice as vLLM's server writes it: the answer part as the content (null
        when a reasoning model's sample has none), the thinking apart."""
        content = choice.text if choice.content is None else (choice.content or None)
        reasoning = choice.reasoning if shown.thinking.shown else None
        return cls(
            content=shown.content_of(content), reasoning=reasoning, reasoning_content=reasoning
        )


class PromptTokenLogprob(BaseModel):
    """One token at a prompt position, as vLLM's server writes its `Logprob`."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


PromptLogprobs = list[dict[str, PromptTokenLogprob] | None]
"""Per prompt position (the first: None), token id -> its log-probability."""


def prompt_logprobs_of(positions: list[Position] | None) -> PromptLogprobs | None:
    """vLLM's `prompt_logprobs` field (minus infinity reads -9999.0, as there)."""
    if positions is None:
        return None
    return [
        None
        if not position or position[0].logprob is None
        else {
            str(t.token_id): PromptTokenLogprob(
                logprob=max(t.logprob if t.logprob is not None else -9999.0, -9999.0),
                rank=t.rank,
                decoded_token=t.token,
            )
            for t in position
        }
        for position in positions
    ]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "abort"]
    logprobs: ChatLogprobs | None = None
    token_ids: list[int] | None = None


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: PromptLogprobs | None = None
    prompt_token_ids: list[int] | None = None
    ttscale: dict[str, Any] | None = Field(
        None, description="strategy evidence: candidates, votes, stop reason, budget"
    )


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "abort"]
    logprobs: CompletionLogprobs | None = None
    prompt_logprobs: PromptLogprobs | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[TextChoice]
    usage: Usage
    ttscale: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "ttscale"
    max_model_len: int
    strategies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="strategy name -> JSON Schema of its parameters"
    )


class StrategyCard(BaseModel):
    name: str
    description: str | None
    parameters: dict[str, Any]


class StrategyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StrategyCard]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VerifierCard(BaseModel):
    name: str
    kinds: list[Literal["outcome", "process"]] = Field(
        description="outcome: scores whole solutions; process: scores each step"
    )
    model: str | None = None
    backend: str | None = None
    format: str | None = Field(None, description="a PRM's input format: qwen or math-shepherd")


class VerifierList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VerifierCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error response: the OpenAI error object."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("invalid request: the message names the field (`param`)"),
    401: _error("missing or wrong API key (when keys are configured)"),
    404: _error("the model is not served here"),
    413: _error("the request body is over the size limit"),
    429: _error("too many completion requests in flight; see Retry-After"),
    500: _error("an unexpected server error (the message names the request id)"),
    503: _error("the engine is loading, failed, or a model server is unavailable"),
}
"""Error responses every /v1 route may give, for the OpenAPI description."""

COMPLETION_ERRORS: dict[int | str, dict[str, Any]] = {
    **API_ERRORS,
    499: {"description": "the client closed the connection; the work was cancelled"},
}
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "an OpenAI chunk or error object as JSON, or [DONE] at the end",
        },
        "event": {"type": "string"},
    },
}
STREAM_CONTENT = {
    "text/event-stream": {
        # `itemSchema` (OpenAPI 3.2) describes each event; tools that read this 3.1
        # description without it see an undescribed stream rather than a wrong one.
        "itemSchema": SSE_EVENT,
        "example": 'data: {"object": "chat.completion.chunk", ...}\n\ndata: [DONE]\n\n',
    }
}
"""With `"stream": true` the 200 is a server-sent event stream of OpenAI chunks."""
