"""Value types of the API's JSON fields, shared by requests and responses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field


def _encodable(text: str) -> str:
    """Lone surrogates (`"\\ud800"` in JSON) are not text: refuse them here, by name,
    rather than fail deep in a tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("not valid Unicode text (a lone surrogate?)") from exc
    return text


def integral(value: Any) -> Any:
    """JSON has one number type, and JSON Schema calls 2.0 an integer: take it as 2.
    `true` and `"2"` are still refused (the models are strict)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, AfterValidator(_encodable)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_encodable)]
# Integers: bounds first (so that the OpenAPI description states them), then `_integral`.
# `lt=2**63` rather than `le=2**63 - 1`: a JSON number states 2**63 exactly.
TokenId = Annotated[int, Field(ge=0, lt=2**31), BeforeValidator(integral)]
Seed = Annotated[int, Field(ge=0, lt=2**63), BeforeValidator(integral)]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(integral)]
