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
(or the 1.5B PRM); the step token id is read from the model's own tokenizer. The model
itself runs in `ttscale.engine.pooling`; this module only turns its logits into scores.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ttscale.engine.pooling import LocalPoolingEngine, PoolingEngine, RemotePoolingEngine
from ttscale.engine.types import ModelShape

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
    """PRM/ORM scoring on a pooling engine (in process or remote): prompt format,
    step-token rows, normalisation, usage. Implements `ProcessVerifier` (PRM) or
    `OutcomeVerifier` (ORM)."""

    def __init__(self, engine: PoolingEngine, kind: RewardKind) -> None:
        self.engine = engine
        self.kind = kind

    @classmethod
    def load(
        cls,
        model_path: Path,
        kind: RewardKind,
        *,
        max_model_len: int | None = None,
        dtype: str = "auto",
        step_token: str = STEP_TOKEN,
        gpu_memory_utilization: float | None = None,
    ) -> RewardModel:
        """An in-process reward model (blocking, tens of seconds: call off the loop)."""
        engine = LocalPoolingEngine.load(
            model_path,
            step_token=step_token if kind == "prm" else None,
            max_model_len=max_model_len,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        return cls(engine, kind)

    @classmethod
    async def connect(
        cls, base_url: str, kind: RewardKind, *, api_key: str | None = None
    ) -> RewardModel:
        """A reward model served by a vLLM server with the pooling runner."""
        return cls(await RemotePoolingEngine.connect(base_url, api_key=api_key), kind)

    def describe(self) -> dict[str, str]:
        """What a verifier listing shows: the model and what runs it."""
        return {"model": self.engine.model, "backend": self.engine.backend}

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def shape(self) -> ModelShape | None:
        return self.engine.shape

    @property
    def step_token_id(self) -> int | None:
        return getattr(self.engine, "step_token_id", None)

    async def close(self) -> None:
        await self.engine.close()

    async def _conversation(self, question: str, answer: str) -> list[int]:
        return await self.engine.render(
            [
                {"role": "system", "content": PRM_SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        )

    async def prm_prompt(self, question: str, steps: Sequence[str]) -> list[int]:
        return await self._conversation(question, "".join(f"{s}{STEP_TOKEN}" for s in steps))

    async def score_steps(
        self,
        question: str,
        solutions: Sequence[Sequence[str]],
        *,
        last_only: bool = False,
        request_id: str | None = None,
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
                self._score_prm(p, len(s), _sub_id(request_id, i)) if ok else _no_evidence(len(s))
                for i, (p, s, ok) in enumerate(zip(prompts, solutions, readable, strict=True))
            )
        )
        read = sum(len(p) for p, ok in zip(prompts, readable, strict=True) if ok)
        return StepScores(list(rows), VerifierUsage(prompt_tokens=read))

    async def _score_prm(
        self, prompt_ids: list[int], steps: int, request_id: str | None
    ) -> list[float]:
        rows = await self.engine.pool(prompt_ids, "token_classify", request_id)
        scores = [_softmax_label_one(row) for row in rows]
        if len(scores) != steps:
            raise RuntimeError(f"PRM returned {len(scores)} step scores for {steps} steps")
        return scores

    async def score_outcomes(
        self, question: str, solutions: Sequence[str], *, request_id: str | None = None
    ) -> OutcomeScores:
        if self.kind != "orm":
            raise TypeError("a process reward model scores steps: use score_steps")
        prompts = [
            (await self._conversation(question, s))[-self.max_model_len :] for s in solutions
        ]
        scores = await asyncio.gather(
            *(self._score_orm(p, _sub_id(request_id, i)) for i, p in enumerate(prompts))
        )
        return OutcomeScores(list(scores), VerifierUsage(prompt_tokens=sum(map(len, prompts))))

    async def _score_orm(self, prompt_ids: list[int], request_id: str | None) -> float:
        if "classify" in await self.engine.supported_tasks():
            return _softmax_label_one(
                (await self.engine.pool(prompt_ids, "classify", request_id))[0]
            )
        rows = await self.engine.pool(prompt_ids, "token_classify", request_id)  # per token
        return _softmax_label_one(rows[-1])

    async def estimate_step_tokens(
        self, question: str, solutions: Sequence[Sequence[str]], *, last_only: bool = False
    ) -> int:
        return sum([len(await self.prm_prompt(question, steps)) for steps in solutions])

    async def estimate_outcome_tokens(self, question: str, solutions: Sequence[str]) -> int:
        return sum([len(await self._conversation(question, s)) for s in solutions])


def _sub_id(request_id: str | None, number: int) -> str | None:
    """Engine request id of one scored solution of a request (None: the engine picks)."""
    return None if request_id is None else f"{request_id}-rm{number}"


async def _no_evidence(steps: int) -> list[float]:
    """Score of steps the PRM could not read (empty or over its context): none, 0."""
    return [0.0] * steps
