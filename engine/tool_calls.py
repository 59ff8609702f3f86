"""Tool calls: vLLM's own tool-call parsers, applied to each sample.

The server is told which parser reads the model's calls (`--tool-call-parser NAME`, by
the names vLLM's own server uses; `--enable-auto-tool-choice` lets the model choose).
A sample drawn with `SamplingSpec.tool_calling` is constrained as vLLM's server
constrains a chat request with tools (the parser's `adjust_request`: a structural tag
that forces a call for `required` or a named function, and frames the calls the model
may make under `auto`), and its calls are read by the parser's `parse`, whichever
adapter drew it. In remote mode the replica receives the constraint as structured
outputs and this front reads the calls, as it splits thinking from answers.
"""

from __future__ import annotations

from typing import Any

from .protocol import EngineRejected
from .types import Sample, SamplingSpec, StructuredOutputs, ToolCall, ToolCalling


class UnknownToolCallParser(ValueError):
    """No vLLM tool-call parser has this name."""


def known_tool_parsers() -> list[str]:
    """The tool-call parsers vLLM offers, by the names of its `--tool-call-parser`."""
    from vllm.tool_parsers import ToolParserManager

    return sorted(ToolParserManager.list_registered())


def check_tool_parser_name(name: str) -> None:
    """Refuse a name vLLM has no tool-call parser for, listing the ones it has."""
    known = known_tool_parsers()
    if name not in known:
        raise UnknownToolCallParser(
            f"unknown tool-call parser {name!r}; vLLM has: {', '.join(known)}"
        )


class ToolCallReader:
    """One model's tool-call parser over its tokenizer."""

    def __init__(self, name: str, tokenizer: Any, *, auto_tool_choice: bool) -> None:
        from vllm.parser.parser_manager import ParserManager

        check_tool_parser_name(name)
        self.name = name
        self.auto_tool_choice = auto_tool_choice
        self._tokenizer = tokenizer
        self._parser_cls = ParserManager.get_parser(
            tool_parser_name=name, enable_auto_tools=auto_tool_choice, tokenizer=tokenizer
        )

    def constrain(self, spec: SamplingSpec) -> SamplingSpec:
        """`spec` as vLLM's server adjusts a chat request with these tools: the
        tool-call constraint (replacing a structured output one where vLLM replaces it)
        and the special tokens the parser needs to see in the text."""
        calling = spec.tool_calling
        if calling is None:
            return spec
        request = self._request(calling, spec)
        adjusted = self._parser(request).adjust_request(request)
        constraint = adjusted.structured_outputs
        return spec.replace(
            structured_outputs=None if constraint is None else _constraint_of(constraint),
            skip_special_tokens=adjusted.skip_special_tokens,
        )

    def read(self, sample: Sample, calling: ToolCalling) -> None:
        """Fill in the sample's calls, and leave in its `content` what precedes them,
        as vLLM's server reads a chat choice (the first call only when `parallel` is
        false, as there)."""
        request = self._request(calling, None)
        parser = self._parser(request)
        said = sample.text if sample.content is None else sample.content
        _, content, calls = parser.parse(said, request, enable_auto_tools=self.auto_tool_choice)
        found = [ToolCall(id=c.id or "", name=c.name, arguments=c.arguments) for c in calls or []]
        if calling.parallel is False:
            found = found[:1]
        sample.tool_calls = found
        sample.content = content or ""

    def _parser(self, request: Any) -> Any:
        """A parser for one sample and its request (vLLM's parsers keep state: one per
        choice)."""
        return self._parser_cls(self._tokenizer, request.tools)

    @staticmethod
    def _request(calling: ToolCalling, spec: SamplingSpec | None) -> Any:
        """The chat request vLLM's parsers take, with the sample's tools and choice."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        fields: dict[str, Any] = {
            "model": "ttscale",
            "messages": [],
            "tools": list(calling.tools),
            "tool_choice": calling.api_choice(),
            "parallel_tool_calls": calling.parallel,
        }
        if spec is not None:
            fields["skip_special_tokens"] = spec.skip_special_tokens
            if spec.structured_outputs is not None:
                fields["structured_outputs"] = spec.structured_outputs.engine_value()
        return ChatCompletionRequest(**fields)


def tool_constraint(reader: ToolCallReader | None, spec: SamplingSpec) -> SamplingSpec:
    """`spec` constrained for its tool calls by `reader` (unchanged without tools); an
    engine without a reader refuses tool calling, as vLLM's server without a parser."""
    if spec.tool_calling is None:
        return spec
    if reader is None:
        raise EngineRejected(
            "tool calling requires --tool-call-parser to be set", param="tool_choice"
        )
    return reader.constrain(spec)


def _constraint_of(params: Any) -> StructuredOutputs | None:
    """vLLM's `StructuredOutputsParams` as the constraint type here."""
    values = {}
    for name in StructuredOutputs.model_fields:
        key = name.rstrip("_")  # json_ is vLLM's json
        value = getattr(params, key, None)
        if value not in (None, False):
            values[key] = value
    return StructuredOutputs.model_validate(values) if values else None
