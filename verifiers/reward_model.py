"""Outcome and process reward models served by vLLM's pooling runner.

PRM (Qwen2.5-Math-PRM format, architecture `Qwen2ForProcessRewardModel`): the steps of
a solution are joined, and terminated, by the step token `<extra_0>` in the assistant
turn; the score of step i is P(label 1) = softmax(logits)[1] at the i-th step token.
vLLM's STEP pooler returns exactly those rows.

ORM: a sequence reward model. `Qwen2ForRewardModel` (Qwen2.5-Math-RM format) gives one
raw reward per token (the last one scores the solution); sequence classifiers such as
`Qwen2ForSequenceClassification` give one logit per label for the whole text. Scores are
mapped to [0, 1]: sigmoid of a single logit, softmax label 1 of two.

Logits are always requested raw (`use_activation=False`) and normalised here, because
the activation vLLM would apply depends on details of each checkpoint's config.

For a real PRM on a GPU: `RewardModel.load(Path("/models/Qwen2.5-Math-PRM-7B"), "prm")`
(or the 1.5B PRM); the step token id is read from the model's own tokenizer.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from server.engine.local_vllm import apply_cpu_defaults, shutdown_async_llm
from server.engine.model_shape import read_model_shape
from server.engine.protocol import EngineError, EngineUnavailable, new_request_id
from server.engine.types import ModelShape

from .protocol import OutcomeScores, StepScores, VerifierUsage

STEP_TOKEN = "<extra_0>"
PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
RewardKind = Literal["prm", "orm"]


def _softmax_label_one(row: Sequence[float]) -> float:
    if len(row) == 1:
        return 1.0 / (1.0 + math.exp(-row[0]))
    top = max(row)
    weights = [math.exp(x - top) for x in row]
    return weights[1] / sum(weights)


class RewardScorer:
    """PRM/ORM scoring logic, whatever runs the model: prompt format, step-token rows,
    normalisation, usage. Implements `ProcessVerifier` (PRM) or `OutcomeVerifier` (ORM).
    """

    kind: RewardKind
    max_model_len: int
    shape: ModelShape | None = None

    async def _render(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a whole conversation (no generation prompt)."""
        raise NotImplementedError

    async def _pool(self, prompt_ids: list[int], task: str) -> list[list[float]]:
        """Raw logits rows: one per step token (STEP pooling) or per token, or one row."""
        raise NotImplementedError

    async def _supported_tasks(self) -> tuple[str, ...]:
        raise NotImplementedError

    async def _conversation(self, question: str, answer: str) -> list[int]:
        return await self._render(
            [
                {"role": "system", "content": PRM_SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        )

    async def prm_prompt(self, question: str, steps: Sequence[str]) -> list[int]:
        return await self._conversation(question, "".join(f"{s}{STEP_TOKEN}" for s in steps))

    async def score_steps(
        self, question: str, solutions: Sequence[Sequence[str]], *, last_only: bool = False
    ) -> StepScores:
        """All steps in one forward pass per solution (`last_only` saves nothing here)."""
        if self.kind != "prm":
            raise TypeError("an outcome reward model does not score steps")
        prompts = [await self.prm_prompt(question, steps) for steps in solutions]
        readable = [
            0 < len(s) and len(p) <= self.max_model_len
            for p, s in zip(prompts, solutions, strict=True)
        ]
        rows = await asyncio.gather(
            *(
                self._score_prm(p, len(s)) if ok else _no_evidence(len(s))
                for p, s, ok in zip(prompts, solutions, readable, strict=True)
            )
        )
        read = sum(len(p) for p, ok in zip(prompts, readable, strict=True) if ok)
        return StepScores(list(rows), VerifierUsage(prompt_tokens=read))

    async def _score_prm(self, prompt_ids: list[int], steps: int) -> list[float]:
        scores = [_softmax_label_one(row) for row in await self._pool(prompt_ids, "token_classify")]
        if len(scores) != steps:
            raise RuntimeError(f"PRM returned {len(scores)} step scores for {steps} steps")
        return scores

    async def score_outcomes(self, question: str, solutions: Sequence[str]) -> OutcomeScores:
        if self.kind != "orm":
            raise TypeError("a process reward model scores steps: use score_steps")
        prompts = [
            (await self._conversation(question, s))[-self.max_model_len :] for s in solutions
        ]
        scores = await asyncio.gather(*(self._score_orm(p) for p in prompts))
        return OutcomeScores(list(scores), VerifierUsage(prompt_tokens=sum(map(len, prompts))))

    async def _score_orm(self, prompt_ids: list[int]) -> float:
        if "classify" in await self._supported_tasks():
            return _softmax_label_one((await self._pool(prompt_ids, "classify"))[0])
        rows = await self._pool(prompt_ids, "token_classify")  # per-token rewards
        return _softmax_label_one(rows[-1])

    async def estimate_step_tokens(
        self, question: str, solutions: Sequence[Sequence[str]], *, last_only: bool = False
    ) -> int:
        return sum([len(await self.prm_prompt(question, steps)) for steps in solutions])

    async def estimate_outcome_tokens(self, question: str, solutions: Sequence[str]) -> int:
        return sum([len(await self._conversation(question, s)) for s in solutions])


async def _no_evidence(steps: int) -> list[float]:
    """Score of steps the PRM could not read (empty or over its context): none, 0."""
    return [0.0] * steps


class RewardModel(RewardScorer):
    """A PRM or ORM on an in-process vLLM pooling engine."""

    def __init__(self, llm: Any, kind: RewardKind, step_token_id: int | None, shape) -> None:
        self._llm = llm
        self.kind = kind
        self._tokenizer = llm.get_tokenizer()
        self.step_token_id = step_token_id
        self.shape = shape
        self.max_model_len = llm.model_config.max_model_len
        from vllm import PoolingParams

        self._pooling_params = PoolingParams
        self._tasks: tuple[str, ...] = ()

    @classmethod
    def load(
        cls,
        model_path: Path,
        kind: RewardKind,
        *,
        max_model_len: int | None = None,
        dtype: str = "auto",
        step_token: str = STEP_TOKEN,
    ) -> RewardModel:
        """Start the pooling engine (blocking, tens of seconds: call off the event loop)."""
        apply_cpu_defaults()
        try:
            from transformers import AutoTokenizer
            from vllm.config import PoolerConfig
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise EngineUnavailable(f"vLLM is not installed ({exc})") from exc

        args: dict[str, Any] = {
            "model": str(model_path),
            "runner": "pooling",
            "dtype": dtype,
            "enforce_eager": True,
            "seed": 0,
        }
        step_token_id = None
        if kind == "prm":
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            step_token_id = tokenizer.convert_tokens_to_ids(step_token)
            if step_token_id is None or step_token_id == tokenizer.unk_token_id:
                raise EngineUnavailable(f"{model_path}: the tokenizer has no {step_token} token")
            # vLLM's default step id is Qwen2.5's; any other tokenizer must say its own.
            args["pooler_config"] = PoolerConfig(pooling_type="STEP", step_tag_id=step_token_id)
        if max_model_len:
            args["max_model_len"] = max_model_len
        try:
            llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        except Exception as exc:
            raise EngineUnavailable(f"vLLM could not load {model_path}: {exc}") from exc
        return cls(llm, kind, step_token_id, read_model_shape(model_path))

    async def _render(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    async def _pool(self, prompt_ids: list[int], task: str) -> list[list[float]]:
        from vllm.inputs import tokens_input

        params = self._pooling_params(task=task, use_activation=False)
        final = None
        async for output in self._llm.encode(
            tokens_input(prompt_ids), params, new_request_id("rm")
        ):
            final = output
        data = final.outputs.data.float()
        return [data.tolist()] if data.dim() == 1 else data.tolist()

    async def _supported_tasks(self) -> tuple[str, ...]:
        if not self._tasks:
            self._tasks = tuple(await self._llm.get_supported_tasks())
        return self._tasks

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await shutdown_async_llm(llm)


class RemoteRewardModel(RewardScorer):
    """A PRM or ORM served by a separate vLLM server (`/tokenize` and `/pooling`).

    Start the server with the pooling runner; for a PRM whose tokenizer is not Qwen2.5's,
    tell it the step token id:
    `python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling
     --pooler-config '{"pooling_type": "STEP", "step_tag_id": ID}'`.
    """

    def __init__(
        self,
        base_url: str,
        kind: RewardKind,
        model_name: str,
        max_model_len: int,
        tasks: tuple[str, ...],
        client: httpx.AsyncClient,
    ) -> None:
        self._base = base_url.rstrip("/")
        self.kind = kind
        self._model = model_name
        self.max_model_len = max_model_len
        self._tasks = tasks
        self._client = client

    @classmethod
    async def connect(
        cls, base_url: str, kind: RewardKind, *, api_key: str | None = None
    ) -> RemoteRewardModel:
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
        return cls(base, kind, model["id"], max_len, tasks, client)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(f"{self._base}{path}", json=body)
        except httpx.HTTPError as exc:
            raise EngineError(f"{self._base}{path}: {exc}") from exc
        if response.status_code != 200:
            raise EngineError(
                f"{self._base}{path}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    async def _render(self, messages: list[dict[str, str]]) -> list[int]:
        body = {
            "model": self._model,
            "messages": messages,
            "add_generation_prompt": False,
            "add_special_tokens": False,
        }
        return (await self._post("/tokenize", body))["tokens"]

    async def _pool(self, prompt_ids: list[int], task: str) -> list[list[float]]:
        body = {"model": self._model, "input": prompt_ids, "task": task, "use_activation": False}
        data = (await self._post("/pooling", body))["data"][0]["data"]
        return data if data and isinstance(data[0], list) else [data]

    async def _supported_tasks(self) -> tuple[str, ...]:
        return self._tasks

    async def close(self) -> None:
        await self._client.aclose()
