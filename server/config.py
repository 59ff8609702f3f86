"""Server settings: command-line flags over `TTSCALE_*` environment variables over defaults.

Settings are read once at start-up and never mutated; each request carries its own
validated parameters and only takes defaults and limits from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    cache_dir: Path | None = Field(None, description="Where converted models are kept")
    max_model_len: int | None = Field(None, ge=16)
    dtype: str = "auto"
    seed: int = 0
    default_max_tokens: int = Field(512, ge=1)
    max_n: int = Field(64, ge=1, description="Largest number of samples one request may ask")
    max_request_tokens: int = Field(
        65536, ge=1, description="Generated-token cap of one request (and its default budget)"
    )
    min_sample_tokens: int = Field(
        16, ge=1, description="A token budget below this cannot pay for one sample"
    )
    grader_workers: int = Field(2, ge=1, description="Processes grading math answers")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one object a line")

    @field_validator("remote_urls", "api_keys", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value
