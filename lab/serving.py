"""Servers for measurement scripts: the ttscale app on loopback around an engine the
script already holds, and a vLLM OpenAI server in a subprocess (stopped with its engine
processes, which a plain kill of the server would leave running)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from ttscale.engine.local_vllm import has_cuda_device
from ttscale.engine.protocol import Engine
from ttscale.server.app import create_app
from ttscale.server.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(engine: Engine, **settings: Any) -> AsyncIterator[str]:
    """The ttscale app serving `engine` on loopback in this event loop; yields its URL
    once `/health` says ready. The app closes the engine when it stops."""

    async def lend(_: Settings) -> Engine:
        return engine

    port = free_port()
    app = create_app(Settings(port=port, **settings), open_engine_fn=lend)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(f"{url}/health", None, None)
        yield url
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def vllm_server(model: Path, name: str, *extra: str) -> AsyncIterator[str]:
    """`vllm.entrypoints.openai.api_server` for `model` as ttscale would run it on this
    machine (float32 on a CPU, whole-prompt prefill, prefix caching); yields its URL."""
    port = free_port()
    async with serve_command(_server_command(model, name, port, extra), port, "/v1/models") as url:
        yield url


@contextlib.asynccontextmanager
async def stand_in_server(model: Path, name: str) -> AsyncIterator[str]:
    """`stand_in_vllm` for `model`: vLLM's HTTP surface with a model that costs nothing."""
    port = free_port()
    command = [
        sys.executable, "-m", "tests.support.stand_in_vllm", "--model", str(model),
        "--served-model-name", name, "--port", str(port),
    ]  # fmt: skip
    async with serve_command(command, port, "/v1/models") as url:
        yield url


@contextlib.asynccontextmanager
async def ttscale_front(vllm_url: str, model: Path, *extra: str) -> AsyncIterator[str]:
    """`ttscale serve --engine remote` in front of `vllm_url`, as its own process (as it
    is deployed: its own event loop, uvloop and httptools when installed, rather than
    sharing the measuring client's); yields its URL once `/health` says ready."""
    port = free_port()
    command = [
        sys.executable, "-m", "ttscale.cli", "serve", "--engine", "remote",
        "--remote-url", vllm_url, "--model", str(model), "--port", str(port),
        "--log-level", "warning", *extra,
    ]  # fmt: skip
    async with serve_command(command, port, "/health") as url:
        yield url


@contextlib.asynccontextmanager
async def serve_command(command: list[str], port: int, ready_path: str) -> AsyncIterator[str]:
    """Run a server `command` listening on `port`; yield its URL once `ready_path`
    answers 200; stop its whole process group afterwards. Its output goes to a log."""
    log = Path(tempfile.mkstemp(prefix="server-", suffix=".log")[1])
    process = _spawn(command, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(f"{url}{ready_path}", process, log)
        yield url
    finally:
        await asyncio.to_thread(_stop_group, process)


def _server_command(model: Path, name: str, port: int, extra: tuple[str, ...]) -> list[str]:
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "2048", "--enforce-eager", "--enable-prefix-caching",
        "--no-enable-chunked-prefill", "--max-logprobs", "20", *extra,
    ]  # fmt: skip
    return command if has_cuda_device() else [*command, "--dtype", "float32"]


def _spawn(command: list[str], log: Path) -> subprocess.Popen:
    """The server in its own session, so that stopping it reaches its engine processes."""
    with log.open("w") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


async def _wait_ready(
    url: str, process: subprocess.Popen | None, log: Path | None, limit_s: float = 600
) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"server not ready after {limit_s} s; see {log}")


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group (engine core and workers included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
