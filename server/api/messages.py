"""Chat messages and tool definitions, as OpenAI's chat requests carry them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .json_types import Text


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
