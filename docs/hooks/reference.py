"""MkDocs hook: reference tables generated from the code, so that they cannot drift.

A page asks for a table with a comment on a line of its own:

    <!-- generated: strategy-params self_consistency -->

and the build replaces it with the table, read from the models, settings, command line,
metrics and OpenAPI description of the installed `ttscale`. An unknown table or
argument fails the build (`mkdocs build --strict` is part of `make test`).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable
from typing import Any

MARKER = re.compile(r"^<!-- generated: ([a-z-]+)((?: [\w.-]+)*) -->$", re.M)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(found: re.Match[str]) -> str:
        name, args = found.group(1), found.group(2).split()
        table = TABLES.get(name)
        if table is None:
            raise ValueError(f"{page.file.src_path}: no generated table named {name!r}")
        return table(Link(posixpath.dirname(page.file.src_path)), *args)

    return MARKER.sub(replace, markdown)


# --- rendering ----------------------------------------------------------------------


class Link:
    """Links from the page a table lands on to other pages of the site."""

    def __init__(self, page_dir: str) -> None:
        self._dir = page_dir or "."

    def to(self, target: str) -> str:
        """`target` (a path from the docs root, maybe with an #anchor) from this page."""
        path, _, anchor = target.partition("#")
        relative = posixpath.relpath(path, self._dir)
        return f"{relative}#{anchor}" if anchor else relative


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _type(schema: dict[str, Any]) -> str:
    """A short type name for a JSON Schema node."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(dict.fromkeys(_type(s) for s in schema["anyOf"]))
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " / ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return "object"
    return {"integer": "integer", "number": "number", "string": "string",
            "boolean": "boolean", "null": "null", "object": "object"}.get(kind, "any")  # fmt: skip


_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<",
           "minLength": "length >=", "maxLength": "length <=", "minItems": "items >=",
           "maxItems": "items <="}  # fmt: skip


def _bounds(schema: dict[str, Any]) -> str:
    parts = [f"{word} {schema[key]}" for key, word in _BOUNDS.items() if key in schema]
    for branch in schema.get("anyOf", []):
        parts += [f"{word} {branch[key]}" for key, word in _BOUNDS.items() if key in branch]
        items = branch.get("items", {})
        parts += [f"each {word} {items[key]}" for key, word in _BOUNDS.items() if key in items]
    return ", ".join(dict.fromkeys(parts))


def _default(schema: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" not in schema:
        return ""
    value = schema["default"]
    text = json.dumps(value)
    return f"`{text}`" if len(text) <= 40 else "see the model"


def _fields_table(schema: dict[str, Any], *, skip: Iterable[str] = ()) -> str:
    required = set(schema.get("required", []))
    rows = []
    for name, field in schema.get("properties", {}).items():
        if name in skip:
            continue
        rows.append(
            (
                f"`{name}`",
                _type(field),
                _default(field, name in required),
                _bounds(field),
                field.get("description", ""),
            )
        )
    return _table(("Field", "Type", "Default", "Bounds", "Meaning"), rows)


# --- the tables ---------------------------------------------------------------------


def _strategies() -> dict[str, Any]:
    from ttscale.strategies.registry import discover

    return discover()


def strategies_table(link: Link) -> str:
    rows = []
    for name, strategy in _strategies().items():
        summary = _first_sentence(strategy.description or "")
        model = strategy.params_model
        verifiers = [f"`{f}`" for f in model.model_fields if "verifier" in f]
        rows.append(
            (
                f"[`{name}`]({link.to(f'strategies/{name}.md')})",
                summary,
                f"`{model.scale_knob}`" if model.scale_knob else "none",
                ", ".join(verifiers) or "none",
            )
        )
    return _table(("Strategy", "What it does", "Scale knob", "Verifier parameters"), rows)


def _first_sentence(text: str) -> str:
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def strategy_params(link: Link, name: str) -> str:
    strategy = _strategies().get(name)
    if strategy is None:
        raise ValueError(f"no strategy named {name!r}")
    schema = strategy.params_model.model_json_schema()
    table = _fields_table(schema, skip=("sampling",))
    knob = strategy.params_model.scale_knob
    fields = link.to("reference.md#sampling-fields")
    scaled = f"`ttscale bench run --n` sets `{knob}`." if knob else "It has no scale knob."
    return (
        table + f"\nAnd `sampling`: how each sample is drawn ([sampling fields]({fields})). "
        f"{scaled}\n"
    )


def sampling_fields(_: Link) -> str:
    from ttscale.engine.types import ADAPTER, API, SamplingSpec

    schema = SamplingSpec.model_json_schema()
    api, adapted = SamplingSpec.fields_exposed(API), SamplingSpec.fields_exposed(ADAPTER)
    rows = []
    for name, field in schema["properties"].items():
        reaches = "each adapter in its own way" if name in adapted else f"vLLM's `{name}`"
        rows.append(
            (
                f"`{name}`",
                _type(field),
                _default(field, False),
                _bounds(field),
                "yes" if name in api else "in `ttscale.params.sampling`",
                reaches,
            )
        )
    header = ("Field", "Type", "Default", "Bounds", "API request field", "Reaches")
    return _table(header, rows)


def model_fields(_: Link, dotted: str) -> str:
    """The fields of any pydantic model, by its import path."""
    module, _, name = dotted.rpartition(".")
    model = getattr(__import__(module, fromlist=[name]), name)
    return _fields_table(model.model_json_schema())


def _openapi() -> dict[str, Any]:
    from ttscale.server.app import create_app
    from ttscale.server.config import Settings

    return create_app(Settings()).openapi()


def request_fields(_: Link, component: str) -> str:
    schema = _openapi()["components"]["schemas"][component]
    return _fields_table(schema)


def errors_table(_: Link) -> str:
    rows = []
    for path, operations in _openapi()["paths"].items():
        for method, operation in operations.items():
            for status, response in sorted(operation.get("responses", {}).items()):
                if status.startswith("2"):
                    continue
                rows.append((f"`{method.upper()} {path}`", status, response["description"]))
    return _table(("Route", "Status", "When"), rows)


def settings_table(_: Link) -> str:
    from ttscale.cli.main import build_parser
    from ttscale.server.config import Settings

    flags = _serve_flags(build_parser())
    rows = []
    for name, field in Settings.model_json_schema()["properties"].items():
        rows.append(
            (
                f"`TTSCALE_{name.upper()}`",
                ", ".join(f"`{flag}`" for flag in flags.get(name, [])) or "",
                _default(field, False),
                field.get("description", ""),
            )
        )
    return _table(("Environment", "Flag of `ttscale serve`", "Default", "Meaning"), rows)


def _serve_flags(parser: Any) -> dict[str, list[str]]:
    commands = next(a for a in parser._actions if a.dest == "command")  # argparse has no API
    serve = commands.choices["serve"]
    flags: dict[str, list[str]] = {}
    for action in serve._actions:
        if action.option_strings and action.dest != "help":
            flags.setdefault(action.dest, []).extend(action.option_strings)
    return flags


def metrics_table(_: Link) -> str:
    from prometheus_client.metrics import MetricWrapperBase

    from ttscale.server.metrics import Metrics

    rows = []
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        (family,) = metric.describe()
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(metric._labelnames)  # prometheus_client keeps them only here
        rows.append((f"`{name}`", family.type, labels, family.documentation))
    return _table(("Metric", "Type", "Labels", "Meaning"), rows)


def vllm_fields(_: Link) -> str:
    """vLLM's request fields that ttscale does not serve as vLLM does, and why."""
    from ttscale.server.api.vllm_fields import NOT_SERVED, NOT_YET_SERVED

    rows = [(f"`{name}`", "refused", reason) for name, reason in sorted(NOT_SERVED.items())]
    rows += [(f"`{name}`", "not yet", "planned") for name in sorted(NOT_YET_SERVED)]
    return _table(("vLLM field", "Here", "Why"), rows)


TABLES: dict[str, Callable[..., str]] = {
    "vllm-fields": vllm_fields,
    "strategies": strategies_table,
    "strategy-params": strategy_params,
    "sampling-fields": sampling_fields,
    "model-fields": model_fields,
    "request-fields": request_fields,
    "errors": errors_table,
    "settings": settings_table,
    "metrics": metrics_table,
}
