"""OpenAI's `response_format`: a shorthand for structured outputs, as vLLM reads it."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
