"""Pooling engines: reward models run by vLLM's pooling runner, in process or remote.

They return raw logits rows (one per step token for a PRM's STEP pooler, one per token,
or one for the whole text) and know nothing of how those become scores: that is the
verifiers' business (`ttscale.verifiers.reward_model`). Two adapters:
- `LocalPoolingEngine`: an in-process `AsyncLLM` with `runner="pooling"`;
- `RemotePoolingEngine`: a vLLM server started with the pooling runner, over HTTP
  (`/tokenize` and `/pooling`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx

from .local_vllm import apply_cpu_defaults, resolve_dtype, shutdown_async_llm
from .model_shape import read_model_shape
from .protocol import EngineError, EngineUnavailable, new_request_id
from .types import ModelShape


class PoolingEngine(Protocol):
    """What reward-model scoring may ask of a pooling engine."""

    max_model_len: int
    shape: ModelShape | None
    model: str
    """The model directory or the served model's name, for listings and logs."""
    backend: str

    async def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a whole conversation (no generation prompt)."""
        ...

    async def pool(
        self, prompt_ids: list[int], task: str, request_id: str | None = None
    ) -> list[list[float]]:
        """Raw logits rows: one per step token (STEP pooling) or per token, or one row."""
        ...

    async def supported_tasks(self) -> tuple[str, ...]: ...

    async def close(self) -> None: ...


class LocalPoolingEngine:
    """A pooling model on an in-process vLLM `AsyncLLM`."""

    backend = "vllm-pooling-local"

    def __init__(
        self, llm: Any, shape: ModelShape | None, step_token_id: int | None, model: str = ""
    ) -> None:
        from vllm import PoolingParams

        self.model = model
        self._llm = llm
        self._tokenizer = llm.get_tokenizer()
        self._pooling_params = PoolingParams
        self._tasks: tuple[str, ...] = ()
        self.shape = shape
        self.step_token_id = step_token_id
        self.max_model_len: int = llm.model_config.max_model_len

    @classmethod
    def load(
        cls,
        model_path: Path,
        *,
        step_token: str | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float | None = None,
    ) -> LocalPoolingEngine:
        """Start the engine (blocking, tens of seconds: call it off the event loop).

        With `step_token` (a PRM), the STEP pooler returns one row per occurrence of that
        token; vLLM's default step id is Qwen2.5's, so it is read from this tokenizer.
        """
        apply_cpu_defaults()
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise EngineUnavailable(f"vLLM is not installed ({exc})") from exc
        args: dict[str, Any] = {
            "model": str(model_path),
            "runner": "pooling",
            "dtype": resolve_dtype(dtype)[0],
            "enforce_eager": True,
            "seed": 0,
        }
        step_token_id = None
        if step_token is not None:
            step_token_id = _step_token_id(model_path, step_token)
            args["pooler_config"] = _step_pooler(step_token_id)
        if max_model_len:
            args["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = gpu_memory_utilization
        try:
            llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        except Exception as exc:
            raise EngineUnavailable(f"vLLM could not load {model_path}: {exc}") from exc
        return cls(llm, read_model_shape(model_path), step_token_id, str(model_path))

    async def render(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    async def pool(
        self, prompt_ids: list[int], task: str, request_id: str | None = None
    ) -> list[list[float]]:
        from vllm.inputs import tokens_input

        params = self._pooling_params(task=task, use_activation=False)
        final = None
        request_id = request_id or new_request_id("rm")
        async for output in self._llm.encode(tokens_input(prompt_ids), params, request_id):
            final = output
        data = final.outputs.data.float()
        return [data.tolist()] if data.dim() == 1 else data.tolist()

    async def supported_tasks(self) -> tuple[str, ...]:
        if not self._tasks:
            self._tasks = tuple(await self._llm.get_supported_tasks())
        return self._tasks

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await shutdown_async_llm(llm)


def _step_token_id(model_path: Path, step_token: str) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    token_id = tokenizer.convert_tokens_to_ids(step_token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise EngineUnavailable(f"{model_path}: the tokenizer has no {step_token} token")
    return token_id


def _step_pooler(step_token_id: int) -> Any:
    from vllm.config import PoolerConfig

    return PoolerConfig(pooling_type="STEP", step_tag_id=step_token_id)


class RemotePoolingEngine:
    """A pooling model behind a vLLM server (`/tokenize` and `/pooling`).

    Start the server with the pooling runner; for a PRM whose tokenizer is not Qwen2.5's,
    tell it the step token id:
    `python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling
     --pooler-config '{"pooling_type": "STEP", "step_tag_id": ID}'`.
    """

    shape: ModelShape | None = None
    backend = "vllm-pooling-remote"

    def __init__(
        self,
        base_url: str,
        model_name: str,
        max_model_len: int,
        tasks: tuple[str, ...],
        client: httpx.AsyncClient,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._model = model_name
        self.model = f"{model_name} at {self._base}"
        self.max_model_len = max_model_len
        self._tasks = tasks
        self._client = client

    @classmethod
    async def connect(cls, base_url: str, *, api_key: str | None = None) -> RemotePoolingEngine:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(300.0, connect=10.0))
        base = base_url.rstrip("/")
        try:
            model = (await client.get(f"{base}/v1/models")).raise_for_status().json()["data"][0]
            probe = await client.post(
                f"{base}/pooling",
                json={"model": model["id"], "input": [0], "task": "classify"},
            )
        except httpx.HTTPError as exc:
            await client.aclose()
            raise EngineUnavailable(f"cannot reach reward model server {base}: {exc}") from exc
        tasks = ("classify", "token_classify") if probe.status_code == 200 else ("token_classify",)
        max_len = int(model.get("max_model_len") or 4096)
        return cls(base, model["id"], max_len, tasks, client)

    async def _post(
        self, path: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        headers = {"X-Request-Id": request_id} if request_id else None
        try:
            response = await self._client.post(f"{self._base}{path}", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise EngineError(f"{self._base}{path}: {exc}") from exc
        if response.status_code != 200:
            raise EngineError(
                f"{self._base}{path}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    async def render(self, messages: list[dict[str, str]]) -> list[int]:
        body = {
            "model": self._model,
            "messages": messages,
            "add_generation_prompt": False,
            "add_special_tokens": False,
        }
        return (await self._post("/tokenize", body))["tokens"]

    async def pool(
        self, prompt_ids: list[int], task: str, request_id: str | None = None
    ) -> list[list[float]]:
        body = {"model": self._model, "input": prompt_ids, "task": task, "use_activation": False}
        data = (await self._post("/pooling", body, request_id))["data"][0]["data"]
        return data if data and isinstance(data[0], list) else [data]

    async def supported_tasks(self) -> tuple[str, ...]:
        return self._tasks

    async def close(self) -> None:
        await self._client.aclose()
