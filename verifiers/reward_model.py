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

from server.engine.local_vllm import apply_cpu_defaults, shutdown_async_llm
from server.engine.model_shape import read_model_shape
from server.engine.protocol import EngineUnavailable, new_request_id
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


class RewardModel:
    """A PRM or ORM on an in-process vLLM pooling engine.

    Implements `ProcessVerifier` (PRM) or `OutcomeVerifier` (ORM).
    """

    def __init__(self, llm: Any, kind: RewardKind, step_token_id: int | None, shape) -> None:
        self._llm = llm
        self.kind = kind
        self._tokenizer = llm.get_tokenizer()
        self._step_token_id = step_token_id
        self.shape: ModelShape | None = shape
        self.max_model_len: int = llm.model_config.max_model_len
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

    # --- prompts ----------------------------------------------------------------------
    def _render(self, question: str, answer: str) -> list[int]:
        messages = [
            {"role": "system", "content": PRM_SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def _prm_prompt(self, question: str, steps: Sequence[str]) -> list[int]:
        joined = "".join(f"{step}{STEP_TOKEN}" for step in steps)
        return self._render(question, joined)

    # --- scoring ----------------------------------------------------------------------
    async def _pool(self, prompt_ids: list[int], task: str) -> Any:
        from vllm.inputs import tokens_input

        params = self._pooling_params(task=task, use_activation=False)
        final = None
        async for output in self._llm.encode(
            tokens_input(prompt_ids), params, new_request_id("rm")
        ):
            final = output
        return final.outputs.data

    async def _supported_tasks(self) -> tuple[str, ...]:
        if not self._tasks:
            self._tasks = tuple(await self._llm.get_supported_tasks())
        return self._tasks

    async def score_steps(self, question: str, solutions: Sequence[Sequence[str]]) -> StepScores:
        if self.kind != "prm":
            raise TypeError("an outcome reward model does not score steps")
        prompts = [self._prm_prompt(question, steps) for steps in solutions]
        rows = await asyncio.gather(
            *(self._score_prm(p, len(s)) for p, s in zip(prompts, solutions, strict=True))
        )
        usage = VerifierUsage(prompt_tokens=sum(min(len(p), self.max_model_len) for p in prompts))
        return StepScores(list(rows), usage)

    async def _score_prm(self, prompt_ids: list[int], steps: int) -> list[float]:
        if steps == 0:
            return []
        if len(prompt_ids) > self.max_model_len:
            return [0.0] * steps  # cannot be read whole: no evidence for any step
        data = await self._pool(prompt_ids, "token_classify")
        scores = [_softmax_label_one(row) for row in data.float().tolist()]
        if len(scores) != steps:
            raise RuntimeError(f"PRM returned {len(scores)} step scores for {steps} steps")
        return scores

    async def score_outcomes(self, question: str, solutions: Sequence[str]) -> OutcomeScores:
        if self.kind != "orm":
            raise TypeError("a process reward model scores steps: use score_steps")
        prompts = [self._render(question, s)[: self.max_model_len] for s in solutions]
        scores = await asyncio.gather(*(self._score_orm(p) for p in prompts))
        return OutcomeScores(list(scores), VerifierUsage(prompt_tokens=sum(map(len, prompts))))

    async def _score_orm(self, prompt_ids: list[int]) -> float:
        if "classify" in await self._supported_tasks():
            data = await self._pool(prompt_ids, "classify")
            return _softmax_label_one(data.float().flatten().tolist())
        data = await self._pool(prompt_ids, "token_classify")  # per-token rewards
        return _softmax_label_one(data.float()[-1].tolist())

    async def estimate_step_tokens(self, question: str, solutions: Sequence[Sequence[str]]) -> int:
        return sum(len(self._prm_prompt(question, steps)) for steps in solutions)

    async def estimate_outcome_tokens(self, question: str, solutions: Sequence[str]) -> int:
        return sum(len(self._render(question, s)) for s in solutions)

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await shutdown_async_llm(llm)
