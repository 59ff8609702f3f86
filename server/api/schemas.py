"""Pydantic models of the API's requests, and how they become service requests.

Requests forbid unknown fields: a misspelt parameter silently ignored is a wrong answer
the user never hears about.
"""

from __future__ import annotations

import typing
from dataclasses import replace
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
)
from pydantic.fields import FieldInfo

from ttscale.engine.types import API, PromptRendering, SamplingSpec, ToolCalling
from ttscale.strategies.errors import InvalidRequest, first_problem
from ttscale.strategies.service import ServiceRequest
from ttscale.strategies.strategy_choice import StrategyChoice, split_model_name

from .json_types import NonEmptyText, PositiveInt, Seed, Text, TokenId, integral
from .messages import ChatMessage, NamedToolChoice, ToolDefinition
from .response_format import ResponseFormat
from .shown import NO_THINKING, Shown, Thinking


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no true for 1
    include_usage: bool = False


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
    stream_interval: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="tokens per streamed chunk at least, as in vLLM: a stream sends each "
        "choice's text in one chunk, so every chunk is at least this long",
    )
    return_token_offsets: bool | None = Field(
        False,
        description="accepted and ignored, as vLLM ignores it on generation endpoints (it "
        "is for its render endpoints)",
    )
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = Field(
        None, description="keep this many prompt tokens (-1: the context less one), as vLLM"
    )
    truncation_side: Literal["left", "right"] | None = Field(
        None, description="left: keep the last tokens; right: the first (default: the tokenizer's)"
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

    def tool_calling(self) -> ToolCalling | None:
        """The tools a sample may call (chat requests only)."""
        return None

    @property
    def returns_prompt_text(self) -> bool:
        """Whether the response shows the rendered prompt (chat requests only)."""
        return False

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
        calling = self.tool_calling()
        if calling is not None:
            given["tool_calling"] = calling
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

    def truncation(self) -> dict[str, Any]:
        """The prompt's truncation fields, as the rendering takes them."""
        return {
            "truncate_prompt_tokens": self.truncate_prompt_tokens,
            "truncation_side": self.truncation_side,
        }

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
        None, description="tools the chat template shows the model and it may call"
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None,
        description='"auto" with tools, else "none"; others than "none" need a server with a '
        "tool-call parser (--tool-call-parser)",
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
    return_prompt_text: bool | None = Field(
        None, description="the response's prompt_text: the prompt the chat template wrote"
    )

    @property
    def returns_prompt_text(self) -> bool:
        return bool(self.return_prompt_text)

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
        calling = self.tool_calling()
        return replace(
            shown,
            echo=last.text() if self.echo and continued else None,
            tool_choice="none" if calling is None else calling.choice,
        )

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
        tools = [tool.model_dump(exclude_none=True) for tool in self.tools or []]
        try:
            rendering = PromptRendering(
                add_generation_prompt=self.add_generation_prompt,
                continue_final_message=self.continue_final_message,
                add_special_tokens=self.add_special_tokens,
                chat_template_kwargs=self.template_variables(),
                tools=tools or None,
                **self.truncation(),
            )
        except ValidationError as exc:
            raise InvalidRequest(first_problem(exc)[1], param="continue_final_message") from exc
        return {"messages": [m.for_template() for m in self.messages], "rendering": rendering}

    def tool_calling(self) -> ToolCalling | None:
        """The tools a sample may call, by vLLM's rules for `tools` and `tool_choice`
        (tools without a choice: "auto"); None where the reply is text ("none"). Whether
        this server reads calls is the service's to check (its engine's parser)."""
        if self.tools == []:
            raise InvalidRequest(
                "`tools` must not be an empty array. Either provide at least one tool or "
                "omit the field entirely.",
                param="tools",
            )
        choice = self.tool_choice or ("auto" if self.tools else "none")
        if choice == "none":
            return None
        if not self.tools:
            raise InvalidRequest(
                "When using `tool_choice`, `tools` must be set.", param="tool_choice"
            )
        tools = tuple(tool.model_dump(exclude_none=True) for tool in self.tools)
        if not isinstance(choice, NamedToolChoice):
            return ToolCalling(tools=tools, choice=choice, parallel=self.parallel_tool_calls)
        if choice.function.name not in {tool.function.name for tool in self.tools}:
            raise InvalidRequest(
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                param="tool_choice",
            )
        if "structured_outputs" in self.model_fields_set or self.response_format is not None:
            raise InvalidRequest(  # vLLM's words
                "You can only either use constraints for structured outputs or tools, not both.",
                param="tool_choice",
            )
        return ToolCalling(
            tools=tools,
            choice="function",
            function=choice.function.name,
            parallel=self.parallel_tool_calls,
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
    max_tokens: Annotated[int, Field(ge=0), BeforeValidator(integral)] | None = Field(
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
        rendering = PromptRendering(add_special_tokens=self.add_special_tokens, **self.truncation())
        return {"prompt": self.prompt, "rendering": rendering}
