"""Processes and servers the tests start: free ports, stand-in apps, real vLLM API
servers, the ttscale app lending the session engine. Shared by the tests and the lab's
measurement scripts, never by the product."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiohttp import web

from ttscale.engine.protocol import Generation
from ttscale.engine.types import (
    DEFAULT_RENDERING,
    EngineInfo,
    EngineStats,
    PromptRendering,
    SamplingSpec,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """An aiohttp app (a stand-in server) on a free local port, for as long as the block
    runs; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def wait_for_http(url: str, process: subprocess.Popen, limit_s: float, log: Path) -> None:
    """Poll `url` until it answers 200; fail early, with the log, if `process` dies."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within {limit_s} s")


def tiny_prm_server_args() -> list[str]:
    """`api_server` flags serving the tiny PRM on the pooling runner (its step token is
    not Qwen2.5's, so the STEP pooler is told its id)."""
    from transformers import AutoTokenizer

    from .tiny_models import STEP_TOKEN, tiny_reward_model_dir

    path = tiny_reward_model_dir("prm")
    step_id = AutoTokenizer.from_pretrained(path).convert_tokens_to_ids(STEP_TOKEN)
    pooler = json.dumps({"pooling_type": "STEP", "step_tag_id": step_id})
    return ["--model", str(path), "--runner", "pooling", "--dtype", "float32",
            "--pooler-config", pooler]  # fmt: skip


@contextlib.contextmanager
def vllm_api_server(args: list[str], env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A real `vllm.entrypoints.openai.api_server` on loopback; yields its base URL."""
    with vllm_api_process(args, env, log_dir) as (url, _):
        yield url


@contextlib.contextmanager
def vllm_api_process(
    args: list[str], env: dict[str, str], log_dir: Path
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`vllm_api_server`, also yielding the process (for tests that crash it)."""
    port = free_port()
    log_path = log_dir / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *args,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
    ]
    with running_process(command, env, log_path, f"http://127.0.0.1:{port}/v1/models") as process:
        yield f"http://127.0.0.1:{port}", process


@contextlib.contextmanager
def running_process(
    command: list[str], env: dict[str, str], log_path: Path, ready_url: str
) -> Iterator[subprocess.Popen]:
    """`command` running, its output in `log_path`, once `ready_url` answers 200; stopped
    (terminated, killed after 60 s) when the block ends."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_http(ready_url, process, 300, log_path)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


async def start_uvicorn(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    """Serve an app on loopback from the test's own event loop."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    return server, task


def reading_tool_calls(engine: Any, parser: str = "hermes") -> Any:
    """The session's in-process engine as `ttscale serve --tool-call-parser PARSER
    --enable-auto-tool-choice` runs it: the same vLLM engine, its samples' calls read."""
    from ttscale.engine.local_vllm import LocalVLLMEngine
    from ttscale.engine.tool_calls import ToolCallReader

    reader = ToolCallReader(parser, engine.vllm.get_tokenizer(), auto_tool_choice=True)
    info = dataclasses.replace(engine.info, tool_call_parser=parser, auto_tool_choice=True)
    return LocalVLLMEngine(engine.vllm, info, tools=reader)


@contextlib.asynccontextmanager
async def serving_engine(engine: Any, **settings: Any) -> AsyncIterator[str]:
    """The ttscale app on loopback, lending it the session engine; yields its base URL
    once `/health` says ready."""
    from ttscale.server.app import create_app
    from ttscale.server.config import Settings

    async def borrow(_: Settings) -> BorrowedEngine:
        return BorrowedEngine(engine)

    port = free_port()
    app = create_app(Settings(port=port, **settings), open_engine_fn=borrow)
    server, task = await start_uvicorn(app, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            while (await client.get(f"{url}/health")).status_code != 200:
                await asyncio.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        await task


async def wait_until_idle(engine, limit_s: float = 5.0) -> int:
    """Poll until the engine runs no samples (or the limit passes); the final count."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while await engine.num_running() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return await engine.num_running()


class BorrowedEngine:
    """Lends the session engine to an app without letting the app close it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def info(self) -> EngineInfo:
        return self._inner.info

    async def render_chat(
        self, messages: Sequence[dict[str, Any]], rendering: PromptRendering = DEFAULT_RENDERING
    ) -> list[int]:
        return await self._inner.render_chat(messages, rendering)

    async def check(self, spec: SamplingSpec) -> None:
        await self._inner.check(spec)

    async def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return await self._inner.tokenize(text, add_special_tokens=add_special_tokens)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return await self._inner.detokenize(token_ids)

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        spec: SamplingSpec,
        n: int = 1,
        request_id: str | None = None,
    ) -> Generation:
        return self._inner.generate(prompt_token_ids, spec, n, request_id)

    async def num_running(self) -> int:
        return await self._inner.num_running()

    async def check_health(self) -> None:
        await self._inner.check_health()

    async def stats(self) -> EngineStats:
        return await self._inner.stats()

    async def close(self) -> None:
        return None
