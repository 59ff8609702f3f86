"""The OpenAPI description, corrected to say exactly what the server does.

FastAPI's generated description is close but not exact in two ways that client
generators and contract testers (schemathesis) notice:

- it documents a 422 for every body; this server answers a 400 instead (the OpenAI
  error shape), so the 422s are removed;
- it writes every numeric bound as a float, and above 2**53 a float is not the integer
  the server checks: `seed < 2**63` read as 9.223372036854776e18 lets clients send
  values the server refuses. Bounds of integer fields are written as integers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def openapi_description(app: FastAPI) -> dict[str, Any]:
    """`app.openapi`: generated once, corrected, cached on the app."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)  # fmt: skip
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        _integer_bounds(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _integer_bounds(node: Any) -> None:
    """Rewrite float bounds of `"type": "integer"` schemas as integers, everywhere."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for bound in _BOUNDS:
                value = node.get(bound)
                if isinstance(value, float) and value.is_integer():
                    node[bound] = int(value)
        for child in node.values():
            _integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _integer_bounds(child)
