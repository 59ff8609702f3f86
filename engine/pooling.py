"""Pooling engines: reward models run by vLLM's pooling runner, in process or remote.

They return raw logits rows (one per step token for a PRM's STEP pooler, one per token,
or one for the whole text) and know nothing of how those become scores: that is the
verifiers' business (`ttscale.verifiers.reward_model`). Two adapters:
- `LocalPoolingEngine`: an in-process `AsyncLLM` with `runner="pooling"`;
- `RemotePoolingEngine`: a vLLM server started with the pooling runner, over HTTP
  (`/tokenize` and `/pooling`).

A plain causal LM scored at step tags (Math-Shepherd-style PRMs: `MistralForCausalLM`,
`LlamaForCausalLM`, `Qwen2ForCausalLM`, ...) runs on the same pooling runner, converted
by vLLM itself (`lm_head_step_engine_args`): `convert="classify"` wraps the model as a
sequence classifier, and the hf_overrides `classifier_from_token=[A, B]` with
`method="no_post_processing"` make its classifier exactly the LM head's rows of those
vocabulary tokens (`vllm.model_executor.models.adapters.load_weights_no_post_processing`);
the STEP pooler (`step_tag_id`) then keeps the rows at the step tag. Each row is thus
[logit(A), logit(B)] of the next-token distribution at a tag, as the causal LM computes
it. (`PoolerConfig.returned_token_ids` is no way to the same end in this vLLM: the STEP
pooler applies it to the hidden states, before the classifier, not to vocabulary logits.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from .http_client import HTTP_ERRORS, REPLY_ERRORS, auth_headers, unusable
from .local_tokenizer import load_tokenizer, off_the_loop_if_long
from .local_vllm import (
    apply_cpu_defaults,
    resolve_dtype,
    shutdown_async_llm,
    start_async_llm,
)
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
    step_token_id: int | None
    """The token a step pooler scores at, where this side knows it (a remote server
    applies its own and does not say which)."""

    async def render(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a whole conversation (no generation prompt)."""
        ...

    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of plain text (with the tokenizer's own BOS etc. by default)."""
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
        step_token_id: int | None = None,
        label_token_ids: Sequence[int] | None = None,
    ) -> LocalPoolingEngine:
        """Start the engine (blocking, tens of seconds: call it off the event loop).

        With `step_token` (a PRM with a classification head), the STEP pooler returns one
        row per occurrence of that token; vLLM's default step id is Qwen2.5's, so it is
        read from this tokenizer (or given as `step_token_id`). With `label_token_ids` (a
        causal LM scored at step tags, see `lm_head_step_engine_args`), one row per
        occurrence of `step_token_id` with the LM's logits of those tokens, in order.
        """
        apply_cpu_defaults()  # before vLLM's config is imported below
        try:
            from vllm.config import PoolerConfig
        except ImportError as exc:
            raise EngineUnavailable(f"vLLM is not installed ({exc})") from exc
        args: dict[str, Any] = {
            "model": str(model_path),
            "runner": "pooling",
            "dtype": resolve_dtype(dtype)[0],
            "enforce_eager": True,
            "seed": 0,
        }
        if label_token_ids is not None:
            if step_token_id is None:
                raise ValueError("label_token_ids need the step_token_id to read them at")
            converted = lm_head_step_engine_args(model_path, step_token_id, label_token_ids)
            args.update(converted, pooler_config=PoolerConfig(**converted["pooler_config"]))
        elif step_token is not None or step_token_id is not None:
            if step_token is not None:
                step_token_id = _step_token_id(model_path, step_token)
            args["pooler_config"] = _step_pooler(step_token_id)
        llm = start_async_llm(
            model_path,
            args,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        return cls(llm, read_model_shape(model_path), step_token_id, str(model_path))

    async def render(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        return await self.tokenize(text, add_special_tokens=False)

    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        encode = partial(self._tokenizer.encode, text, add_special_tokens=add_special_tokens)
        return list(await off_the_loop_if_long(encode, len(text)))

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


def tokenize_texts(model_path: Path, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text with the model's own tokenizer, without special tokens
    (blocking: it loads the tokenizer)."""
    tokenizer = load_tokenizer(model_path)
    return [list(tokenizer.encode(text, add_special_tokens=False)) for text in texts]


def lm_head_step_engine_args(
    model_path: Path, step_token_id: int, label_token_ids: Sequence[int]
) -> dict[str, Any]:
    """vLLM engine arguments that serve a causal LM as a step-tag PRM (blocking).

    Rows: one per occurrence of `step_token_id` in the prompt, each the LM's next-token
    logits of `label_token_ids`, in that order. `classifier_from_token` names vocabulary
    entries (vLLM looks them up with `convert_tokens_to_ids`), so the ids are turned into
    this tokenizer's token strings, e.g. "▁+" in a SentencePiece vocabulary.
    """
    tokenizer = load_tokenizer(model_path)
    labels = [tokenizer.convert_ids_to_tokens(int(i)) for i in label_token_ids]
    for token_id, token in zip(label_token_ids, labels, strict=True):
        if token is None or tokenizer.convert_tokens_to_ids(token) != token_id:
            raise EngineUnavailable(f"{model_path}: token id {token_id} has no vocabulary entry")
    return {
        "runner": "pooling",
        "convert": "classify",
        "hf_overrides": {"classifier_from_token": labels, "method": "no_post_processing"},
        "pooler_config": {
            "task": "token_classify",
            "pooling_type": "STEP",
            "step_tag_id": int(step_token_id),
        },
    }


def lm_head_step_server_args(
    model_path: Path, step_token_id: int, label_token_ids: Sequence[int]
) -> list[str]:
    """`vllm.entrypoints.openai.api_server` flags for the same model as
    `lm_head_step_engine_args` (add `--model`, `--dtype`, host and port).

    The pooler's `task` must be named on a server: its `/pooling` endpoint serves only
    the model's one pooling task, which for a converted classifier is "classify" unless
    told otherwise.
    """
    args = lm_head_step_engine_args(model_path, step_token_id, label_token_ids)
    return [
        "--runner",
        args["runner"],
        "--convert",
        args["convert"],
        "--hf-overrides",
        json.dumps(args["hf_overrides"], ensure_ascii=False),
        "--pooler-config",
        json.dumps(args["pooler_config"]),
    ]


class RemotePoolingEngine:
    """A pooling model behind a vLLM server (`/tokenize` and `/pooling`).

    Start the server with the pooling runner; for a PRM whose tokenizer is not Qwen2.5's,
    tell it the step token id:
    `python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling
     --pooler-config '{"pooling_type": "STEP", "step_tag_id": ID}'`.
    For a causal LM scored at step tags (Math-Shepherd), `lm_head_step_server_args`
    gives the flags:
    `python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling
     --convert classify
     --hf-overrides '{"classifier_from_token": [GOOD, BAD], "method": "no_post_processing"}'
     --pooler-config '{"task": "token_classify", "pooling_type": "STEP", "step_tag_id": ID}'`
    where GOOD and BAD are vocabulary token strings (e.g. "▁+", "▁-") and ID the tag's id.
    """

    shape: ModelShape | None = None
    backend = "vllm-pooling-remote"

    def __init__(
        self,
        base_url: str,
        model_name: str,
        max_model_len: int,
        tasks: tuple[str, ...],
        session: aiohttp.ClientSession,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._model = model_name
        self.model = f"{model_name} at {self._base}"
        self.step_token_id: int | None = None
        self.max_model_len = max_model_len
        self._tasks = tasks
        self._session = session

    @classmethod
    async def connect(cls, base_url: str, *, api_key: str | None = None) -> RemotePoolingEngine:
        """Ask the server what it serves and which pooling tasks it takes; fail clearly
        if it cannot be reached."""
        session = aiohttp.ClientSession(
            headers=auth_headers(api_key),
            timeout=aiohttp.ClientTimeout(total=300.0, sock_connect=10.0),
        )
        base = base_url.rstrip("/")
        try:
            async with session.get(f"{base}/v1/models") as reply:
                reply.raise_for_status()
                model = (await reply.json(content_type=None))["data"][0]
            probe = {"model": model["id"], "input": [0], "task": "classify"}
            async with session.post(f"{base}/pooling", json=probe) as reply:
                classify = reply.status == 200
                await reply.read()
        except BaseException as exc:  # the session must not outlive a failed connect
            await session.close()
            if isinstance(exc, (*HTTP_ERRORS, *REPLY_ERRORS)):
                raise EngineUnavailable(unusable(f"reward model server {base}", exc)) from exc
            raise
        tasks = ("classify", "token_classify") if classify else ("token_classify",)
        max_len = int(model.get("max_model_len") or 4096)
        return cls(base, model["id"], max_len, tasks, session)

    async def _post(
        self, path: str, body: dict[str, Any], request_id: str | None = None
    ) -> dict[str, Any]:
        url = f"{self._base}{path}"
        headers = {"X-Request-Id": request_id} if request_id else None
        try:
            async with self._session.post(url, json=body, headers=headers) as reply:
                if reply.status != 200:
                    raise EngineError(f"{url}: HTTP {reply.status}: {(await reply.text())[:300]}")
                return await reply.json(content_type=None)
        except HTTP_ERRORS as exc:
            raise EngineError(f"{url}: {exc!r}") from exc
        except ValueError as exc:  # not JSON
            raise EngineError(f"{url}: the reply is not JSON: {exc!r}") from exc

    async def render(self, messages: list[dict[str, str]]) -> list[int]:
        body = {
            "model": self._model,
            "messages": messages,
            "add_generation_prompt": False,
            "add_special_tokens": False,
        }
        return (await self._post("/tokenize", body))["tokens"]

    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        body = {"model": self._model, "prompt": text, "add_special_tokens": add_special_tokens}
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
        await self._session.close()
