"""Model preparation, model-directory checks and settings parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ttscale.engine.local_vllm import _cpu_list
from ttscale.engine.model_shape import count_safetensors_params, read_model_shape
from ttscale.engine.model_store import (
    ModelStoreError,
    default_model_dir,
    ensure_default_model,
    is_complete_model_dir,
    validate_model_dir,
)
from ttscale.server.config import Settings
from ttscale.server.wiring import service_limits


def test_default_model_is_converted_once_to_a_complete_directory(default_model_path: Path):
    assert is_complete_model_dir(default_model_path)
    assert default_model_path == default_model_dir()
    config = json.loads((default_model_path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (default_model_path / "chat_template.jinja").exists() or "chat_template" in (
        default_model_path / "tokenizer_config.json"
    ).read_text()
    stamp = (default_model_path / "model.safetensors").stat().st_mtime_ns
    assert ensure_default_model() == default_model_path  # second call converts nothing
    assert (default_model_path / "model.safetensors").stat().st_mtime_ns == stamp


def test_converted_default_model_has_smollm2_shape(default_model_path: Path):
    shape = read_model_shape(default_model_path)
    assert shape is not None
    assert (shape.num_layers, shape.hidden_size, shape.num_kv_heads) == (30, 576, 3)
    # SmolLM2-135M: ~134.5M parameters with tied embeddings
    assert 130e6 < count_safetensors_params(default_model_path) < 140e6


def test_validate_model_dir_accepts_a_real_model(tiny_model_path: Path):
    assert validate_model_dir(tiny_model_path) == tiny_model_path


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no config.json"),
        ({"config.json": "{}"}, "no weights"),
        ({"config.json": "[", "model.safetensors": ""}, "unreadable model config"),
        ({"config.json": "{}", "model.safetensors": "\xff" * 8 + "x"}, "unreadable weights"),
    ],
)
def test_validate_model_dir_rejects_broken_directories(tmp_path: Path, files, message):
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="latin-1")
    with pytest.raises(ModelStoreError, match=message):
        validate_model_dir(tmp_path)


def test_settings_read_environment_and_split_remote_urls(monkeypatch):
    monkeypatch.setenv("TTSCALE_PORT", "9001")
    monkeypatch.setenv("TTSCALE_REMOTE_URLS", "http://a:1, http://b:2")
    monkeypatch.setenv("TTSCALE_ENGINE_FILL", "24")
    settings = Settings()
    assert settings.port == 9001
    assert service_limits(settings).engine_fill == 24
    assert settings.remote_urls == ["http://a:1", "http://b:2"]
    assert Settings(port=9002).port == 9002  # explicit values win over the environment


def test_settings_reject_nonsense():
    with pytest.raises(ValidationError):
        Settings(port=70000)
    with pytest.raises(ValidationError):
        Settings(engine="quantum")
    with pytest.raises(ValidationError):
        Settings(unknown_setting=1)


def test_cpu_bind_list_is_compressed_into_ranges():
    assert _cpu_list([0, 1]) == "0-1"
    assert _cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert _cpu_list([3]) == "3"


def test_json_log_lines_carry_key_value_fields():
    import json
    import logging

    from ttscale.server.cli import JsonLogFormatter

    record = logging.LogRecord(
        "ttscale.server",
        logging.INFO,
        __file__,
        1,
        "request=%s strategy=%s latency_s=%.2f",
        ("req-1", "best_of_n", 0.5),
        None,
    )
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["level"] == "info" and entry["logger"] == "ttscale.server"
    assert entry["request"] == "req-1" and entry["strategy"] == "best_of_n"
    assert entry["latency_s"] == "0.50"


def test_reward_models_are_named_by_kind_or_explicitly(monkeypatch):
    monkeypatch.setenv("TTSCALE_PRM", "/models/a,math=http://127.0.0.1:8002")
    monkeypatch.setenv("TTSCALE_PRM_FORMATS", "math=math-shepherd")
    settings = Settings(orm=["/models/rm", "/models/rm2"])
    specs = {s.name: s for s in settings.reward_models()}
    assert list(specs) == ["prm", "math", "orm", "orm2"]
    assert specs["prm"].prm_format == "qwen" and not specs["prm"].is_remote
    assert specs["math"].prm_format == "math-shepherd" and specs["math"].is_remote
    assert specs["orm2"].kind == "orm" and specs["orm2"].source == "/models/rm2"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prm": ["judge=/m"]}, "'judge' is taken"),
        ({"prm": ["a=/m"], "orm": ["a=/n"]}, "must be distinct"),
        ({"prm": ["a=/m"], "prm_formats": ["b=math-shepherd"]}, "names no --prm: b"),
        ({"prm": ["a=/m"], "prm_formats": ["a=other"]}, "use NAME=qwen or NAME=math-shepherd"),
        ({"prm": ["bad name=/m"]}, "use letters, digits"),
    ],
)
def test_reward_model_settings_are_checked(fields, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)


def test_block_size_reaches_the_engine_config(monkeypatch):
    """The KV block is the unit of prefix-cache hits: `--block-size` (or
    TTSCALE_BLOCK_SIZE) is handed to vLLM; unset, vLLM keeps its own default."""
    from ttscale.cli.main import build_parser
    from ttscale.server.cli import settings_from_args
    from ttscale.server.wiring import engine_config

    args = build_parser().parse_args(["serve", "--block-size", "32"])
    assert engine_config(settings_from_args(args)).block_size == 32
    monkeypatch.setenv("TTSCALE_BLOCK_SIZE", "64")
    assert engine_config(Settings()).block_size == 64
    monkeypatch.delenv("TTSCALE_BLOCK_SIZE")
    assert engine_config(Settings()).block_size is None
    with pytest.raises(ValidationError):
        Settings(block_size=0)
