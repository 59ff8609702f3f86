"""Server settings: command-line flags over `TTSCALE_*` environment variables over defaults.

Settings are read once at start-up and never mutated; each request carries its own
validated parameters and only takes defaults and limits from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ttscale.strategies.in_flight import DEFAULT_ENGINE_FILL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTSCALE_", frozen=True, extra="forbid")

    model: Path | None = Field(
        None, description="Local Hugging Face model directory; default: embedded SmolLM2"
    )
    served_model_name: str | None = Field(
        None, description="Model id clients send; default: the directory name"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    engine: Literal["local", "remote"] = "local"
    remote_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="vLLM OpenAI servers (engine=remote), comma-separated"
    )
    remote_api_key: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted Bearer keys (comma-separated); none: open"
    )
    prm: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="process reward models, [NAME=]DIR_OR_URL, comma-separated (name: prm)",
    )
    orm: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="outcome reward models, [NAME=]DIR_OR_URL, comma-separated (name: orm)",
    )
    prm_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="NAME=FORMAT for PRMs not in the Qwen2.5-Math-PRM format "
        "(math-shepherd: a causal LM read at ' ки' step tags), comma-separated",
    )
    reward_gpu_share: float = Field(
        0.3, gt=0.0, lt=0.9, description="GPU memory fraction for in-process reward models"
    )
    cache_dir: Path | None = Field(None, description="Where converted models are kept")
    reasoning_parser: str | None = Field(
        None,
        description="vLLM's reasoning parser for a reasoning model (deepseek_r1, qwen3, ...): "
        "thinking is returned apart from the answer, and thinking budgets are taken",
    )
    tool_call_parser: str | None = Field(
        None,
        description="vLLM's tool-call parser for the model (hermes, llama3_json, ...): chat "
        "requests with tools get their calls back as tool_calls, and strategies vote on them",
    )
    auto_tool_choice: bool = Field(
        False, description='the model may choose to call a tool (tool_choice "auto")'
    )
    max_model_len: int | None = Field(None, ge=16)
    dtype: str = "auto"
    block_size: int | None = Field(
        None,
        ge=1,
        description="KV-cache block size in tokens, the unit of prefix-cache hits "
        "(default: vLLM's, 16 on a GPU and 128 on a CPU)",
    )
    seed: int = 0
    default_max_tokens: int = Field(512, ge=1)
    max_n: int = Field(64, ge=1, description="Largest number of samples one request may ask")
    max_request_tokens: int = Field(
        65536, ge=1, description="Generated-token cap of one request (and its default budget)"
    )
    min_sample_tokens: int = Field(
        16, ge=1, description="A token budget below this cannot pay for one sample"
    )
    max_body_bytes: int = Field(
        4 * 2**20, ge=1024, description="larger request bodies are refused (413) unread"
    )
    max_in_flight: int = Field(
        256, ge=1, description="completion requests served at once; more get a 429"
    )
    engine_fill: int = Field(
        DEFAULT_ENGINE_FILL,
        ge=1,
        description="Samples in flight at which the engine counts as busy: below it, "
        "adaptive requests run more of their samples at once",
    )
    grader_workers: int = Field(2, ge=1, description="Processes grading math answers")
    grading_timeout_s: float = Field(
        5.0, gt=0.0, description="One grading check's limit; its worker is killed after it"
    )
    grading_deadline_s: float = Field(
        15.0, gt=0.0, description="Total wall time one request may spend grading its answers"
    )
    docs: bool = Field(
        True, description="serve /docs, /redoc and /openapi.json (off: they are 404s)"
    )
    ui: bool = Field(True, description="serve the browser view at /ui (off: a 404)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one object a line")

    @field_validator("remote_urls", "api_keys", "prm", "orm", "prm_formats", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @model_validator(mode="after")
    def _reward_names(self) -> Settings:
        specs = self.reward_models()
        names = [spec.name for spec in specs]
        unknown = set(self.prm_format_by_name()) - {s.name for s in specs if s.kind == "prm"}
        if unknown:
            raise ValueError(f"prm_formats names no --prm: {', '.join(sorted(unknown))}")
        if "judge" in names:
            raise ValueError("the verifier name 'judge' is taken by the LLM judge")
        if len(set(names)) != len(names):
            raise ValueError(f"reward model names must be distinct: {', '.join(names)}")
        return self

    def reward_models(self) -> list[RewardSpec]:
        """The --prm/--orm entries, named: `NAME=SOURCE`, or the kind (prm, prm2, ...)."""
        specs: list[RewardSpec] = []
        for kind, entries in (("prm", self.prm), ("orm", self.orm)):
            for number, entry in enumerate(entries, start=1):
                name, sep, source = entry.partition("=")
                if not sep or "/" in name or ":" in name:
                    name, source = (kind if number == 1 else f"{kind}{number}"), entry
                if not _NAME.fullmatch(name):
                    raise ValueError(f"reward model name {name!r}: use letters, digits, _ . -")
                prm_format = (
                    self.prm_format_by_name().get(name, "qwen") if kind == "prm" else "qwen"
                )
                specs.append(RewardSpec(name, kind, source, prm_format))
        return specs

    def prm_format_by_name(self) -> dict[str, str]:
        formats: dict[str, str] = {}
        for entry in self.prm_formats:
            name, sep, value = entry.partition("=")
            if not sep or value not in _PRM_FORMATS:
                raise ValueError(f"prm format {entry!r}: use NAME=qwen or NAME=math-shepherd")
            formats[name] = value
        return formats


_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PRM_FORMATS = ("qwen", "math-shepherd")


@dataclass(frozen=True)
class RewardSpec:
    """One reward model to serve: its verifier name, kind, and directory or URL."""

    name: str
    kind: Literal["prm", "orm"]
    source: str
    prm_format: str = "qwen"

    @property
    def is_remote(self) -> bool:
        return self.source.startswith(("http://", "https://"))
