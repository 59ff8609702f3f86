"""Outcome and process reward models served by vLLM's pooling runner.

PRMs come in two formats (`prm_format`):
- "qwen" (Qwen2.5-Math-PRM, architecture `Qwen2ForProcessRewardModel`): the steps of a
  solution are joined, and terminated, by the step token `<extra_0>` in the assistant
  turn of the chat template; the score of step i is P(label 1) = softmax(logits)[1] at
  the i-th step token. vLLM's STEP pooler returns exactly those rows.
- "math-shepherd" (e.g. peiyi9979/math-shepherd-mistral-7b-prm): a plain causal LM
  (`MistralForCausalLM`, `LlamaForCausalLM`, `Qwen2ForCausalLM`, ...) and no chat
  template. The text is the question, one space, then the steps, each followed by the
  step tag, joined by newlines, with surrounding whitespace stripped from the question
  and from each step (the layout of Math-Shepherd's own example):
      "{question} {step 1} ки\\n{step 2} ки\\n...{step n} ки"
  tokenized with the tokenizer's special tokens (a BOS for Mistral/Llama). The score of
  step i is P(good) = softmax([logit(good), logit(bad)])[0] of the LM's next-token
  logits at the i-th tag; the tag is " ки" and the labels "+" and "-" by default. The
  ids come from the model's own tokenizer, and each must be one token: the tag as it
  follows text ("2." + tag must add exactly one token to "2."), the labels each
  tokenized alone, which in a SentencePiece vocabulary gives "▁+" and "▁-", the ids
  Math-Shepherd's example reads (`tokenizer.encode("+ -")[1:]`). vLLM serves the LM
  converted to a step-tag classifier whose two outputs are those logits (see
  `ttscale.engine.pooling.lm_head_step_engine_args`; `math_shepherd_server_args` gives
  the flags of a separate server). A solution whose text holds the tag elsewhere too
  (tags and steps would not match up) is not read, like an overlong one: scores 0.

ORM: a sequence reward model. `Qwen2ForRewardModel` (Qwen2.5-Math-RM format) gives one
raw reward per token (the last one scores the solution); sequence classifiers such as
`Qwen2ForSequenceClassification` give one logit per label for the whole text. Scores are
mapped to [0, 1]: sigmoid of a single logit, softmax label 1 of two.

Logits are always requested raw (`use_activation=False`) and normalised here, because
the activation vLLM would apply depends on details of each checkpoint's config.

For a real PRM on a GPU: `RewardModel.load(Path("/models/Qwen2.5-Math-PRM-7B"), "prm")`
(or the 1.5B PRM); the step token id is read from the model's own tokenizer. A
Math-Shepherd PRM: `RewardModel.load(Path("/models/math-shepherd-mistral-7b-prm"), "prm",
prm_format="math-shepherd")`. The model itself runs in `ttscale.engine.pooling`; this
module only builds prompts and turns logits into scores.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from ttscale.engine.pooling import (
    LocalPoolingEngine,
    PoolingEngine,
    RemotePoolingEngine,
    lm_head_step_server_args,
    tokenize_texts,
)
from ttscale.engine.protocol import EngineError, EngineUnavailable
from ttscale.engine.types import ModelShape

from .protocol import OutcomeScores, StepScores, VerifierUsage

logger = logging.getLogger(__name__)

STEP_TOKEN = "<extra_0>"
PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
RewardKind = Literal["prm", "orm"]
PrmFormat = Literal["qwen", "math-shepherd"]

SHEPHERD_STEP_TAG = " ки"
SHEPHERD_GOOD = "+"
SHEPHERD_BAD = "-"
_TAG_ANCHOR = "2."
"""Text the step tag is probed after, to find the token it becomes at the end of a step."""


def _softmax_at(row: Sequence[float], index: int) -> float:
    top = max(row)
    weights = [math.exp(x - top) for x in row]
    return weights[index] / sum(weights)


def _softmax_label_one(row: Sequence[float]) -> float:
    if len(row) == 1:
        return 1.0 / (1.0 + math.exp(-row[0]))
    return _softmax_at(row, 1)


def _p_good(row: Sequence[float]) -> float:
    """P(good) of a [logit(good), logit(bad)] row."""
    if len(row) != 2:
        raise RuntimeError(f"a step-tag PRM row has {len(row)} logits, not (good, bad)")
    return _softmax_at(row, 0)


@dataclass(frozen=True, slots=True)
class ShepherdTokens:
    """A Math-Shepherd PRM's step tag and labels, as text and as this tokenizer's ids."""

    step_tag: str
    good_token: str
    bad_token: str
    step_tag_id: int
    good_id: int
    bad_id: int


def shepherd_probe_texts(step_tag: str, good_token: str, bad_token: str) -> list[str]:
    """The texts `resolve_shepherd_tokens` needs tokenized (no special tokens)."""
    anchor, tagged = _TAG_ANCHOR, _TAG_ANCHOR + step_tag
    return [anchor, tagged, f"{tagged}\n{tagged}", good_token, bad_token]


def resolve_shepherd_tokens(
    step_tag: str, good_token: str, bad_token: str, encoded: Sequence[Sequence[int]]
) -> ShepherdTokens:
    """The ids of the tag and labels, from the token ids of `shepherd_probe_texts`.

    Raises ValueError unless the tag is one token where it stands in a prompt (after a
    step's text, and before the newline and the next step) and each label one token.
    """
    anchor, tagged, twice, good_ids, bad_ids = (list(ids) for ids in encoded)
    if tagged[: len(anchor)] != anchor or len(tagged) != len(anchor) + 1:
        raise ValueError(
            f"the step tag {step_tag!r} is not one token after text in this tokenizer: "
            f"{_TAG_ANCHOR!r} is {anchor}, with the tag {tagged}"
        )
    tag_id = tagged[-1]
    if twice.count(tag_id) != 2:
        raise ValueError(f"the step tag {step_tag!r} does not stay one token between steps")
    for name, text, ids in (("good", good_token, good_ids), ("bad", bad_token, bad_ids)):
        if len(ids) != 1:
            raise ValueError(f"the {name} label {text!r} is {len(ids)} tokens, not one")
    if good_ids == bad_ids:
        raise ValueError(f"the labels {good_token!r} and {bad_token!r} are the same token")
    if tag_id in (good_ids[0], bad_ids[0]):
        raise ValueError("the step tag and a label are the same token")
    return ShepherdTokens(step_tag, good_token, bad_token, tag_id, good_ids[0], bad_ids[0])


def shepherd_text(question: str, steps: Sequence[str], step_tag: str = SHEPHERD_STEP_TAG) -> str:
    """A Math-Shepherd PRM's input: "{question} {step 1}{tag}\\n...{step n}{tag}"."""
    return f"{question.strip()} " + "\n".join(f"{step.strip()}{step_tag}" for step in steps)


def math_shepherd_server_args(
    model_path: Path,
    *,
    step_tag: str = SHEPHERD_STEP_TAG,
    good_token: str = SHEPHERD_GOOD,
    bad_token: str = SHEPHERD_BAD,
) -> list[str]:
    """The flags of a vLLM server that `RewardModel.connect(url, "prm",
    prm_format="math-shepherd", ...)` can use (add --model, --dtype, host and port):
    --runner pooling --convert classify --hf-overrides '{"classifier_from_token": [GOOD,
    BAD], "method": "no_post_processing"}' --pooler-config '{"task": "token_classify",
    "pooling_type": "STEP", "step_tag_id": TAG_ID}', GOOD and BAD being vocabulary
    entries (e.g. "▁+", "▁-") and TAG_ID the tag's id."""
    tokens = _local_shepherd_tokens(model_path, step_tag, good_token, bad_token)
    return lm_head_step_server_args(model_path, tokens.step_tag_id, (tokens.good_id, tokens.bad_id))


def _local_shepherd_tokens(
    model_path: Path, step_tag: str, good_token: str, bad_token: str
) -> ShepherdTokens:
    texts = shepherd_probe_texts(step_tag, good_token, bad_token)
    return resolve_shepherd_tokens(
        step_tag, good_token, bad_token, tokenize_texts(model_path, texts)
    )


def _prm_format(kind: RewardKind, prm_format: str) -> PrmFormat:
    if prm_format not in get_args(PrmFormat):
        raise ValueError(f"unknown PRM format {prm_format!r}: one of {get_args(PrmFormat)}")
    if kind != "prm" and prm_format != "qwen":
        raise ValueError("prm_format is for process reward models")
    return prm_format  # type: ignore[return-value]


class RewardModel:
    """PRM/ORM scoring on a pooling engine (in process or remote): prompt format,
    step-token rows, normalisation, usage. Implements `ProcessVerifier` (PRM) or
    `OutcomeVerifier` (ORM)."""

    def __init__(
        self,
        engine: PoolingEngine,
        kind: RewardKind,
        prm_format: PrmFormat = "qwen",
        shepherd: ShepherdTokens | None = None,
    ) -> None:
        if (prm_format == "math-shepherd") != (shepherd is not None):
            raise ValueError("a Math-Shepherd PRM, and only one, needs its ShepherdTokens")
        self.engine = engine
        self.kind = kind
        self.prm_format = _prm_format(kind, prm_format)
        self.shepherd = shepherd

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
        prm_format: PrmFormat = "qwen",
        step_tag: str = SHEPHERD_STEP_TAG,
        good_token: str = SHEPHERD_GOOD,
        bad_token: str = SHEPHERD_BAD,
    ) -> RewardModel:
        """An in-process reward model (blocking, tens of seconds: call off the loop).

        `step_token` is the Qwen format's; `step_tag`, `good_token` and `bad_token` the
        Math-Shepherd format's (ValueError unless each is one token of the model's
        tokenizer).
        """
        prm_format = _prm_format(kind, prm_format)
        if prm_format == "qwen":
            engine = LocalPoolingEngine.load(
                model_path,
                step_token=step_token if kind == "prm" else None,
                max_model_len=max_model_len,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
            )
            return cls(engine, kind)
        tokens = _local_shepherd_tokens(model_path, step_tag, good_token, bad_token)
        engine = LocalPoolingEngine.load(
            model_path,
            step_token_id=tokens.step_tag_id,
            label_token_ids=(tokens.good_id, tokens.bad_id),
            max_model_len=max_model_len,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        return cls(engine, kind, prm_format, tokens)

    @classmethod
    async def connect(
        cls,
        base_url: str,
        kind: RewardKind,
        *,
        api_key: str | None = None,
        prm_format: PrmFormat = "qwen",
        step_tag: str = SHEPHERD_STEP_TAG,
        good_token: str = SHEPHERD_GOOD,
        bad_token: str = SHEPHERD_BAD,
    ) -> RewardModel:
        """A reward model served by a vLLM server with the pooling runner.

        A Math-Shepherd PRM's server must be started with the flags of
        `math_shepherd_server_args` (the same tag and labels); its tokenizer gives the
        ids, and one probe checks that it answers one (good, bad) row per tag, else
        EngineUnavailable.
        """
        prm_format = _prm_format(kind, prm_format)
        engine = await RemotePoolingEngine.connect(base_url, api_key=api_key)
        if prm_format == "qwen":
            return cls(engine, kind)
        try:
            texts = shepherd_probe_texts(step_tag, good_token, bad_token)
            encoded = [await engine.tokenize(t, add_special_tokens=False) for t in texts]
            tokens = resolve_shepherd_tokens(step_tag, good_token, bad_token, encoded)
            model = cls(engine, kind, prm_format, tokens)
            await model._check_step_tag_rows()
        except BaseException:
            await engine.close()
            raise
        return model

    async def _check_step_tag_rows(self) -> None:
        """One tag in, one (good, bad) row out, or the server is not set up for it."""
        assert self.shepherd is not None
        tag_id = self.shepherd.step_tag_id
        hint = (
            f"{self.engine.model} does not answer one (good, bad) row per step tag (id "
            f"{tag_id}): start it with --runner pooling --convert classify --hf-overrides "
            '\'{"classifier_from_token": [GOOD, BAD], "method": "no_post_processing"}\' '
            '--pooler-config \'{"task": "token_classify", "pooling_type": "STEP", '
            f'"step_tag_id": {tag_id}}}\' (math_shepherd_server_args gives them)'
        )
        try:
            ids = await self.engine.tokenize(_TAG_ANCHOR + self.shepherd.step_tag)
            rows = await self.engine.pool(ids, "token_classify")
        except EngineError as exc:
            raise EngineUnavailable(f"{hint}: {exc}") from exc
        if len(rows) != 1 or len(rows[0]) != 2:
            raise EngineUnavailable(f"{hint}: got rows of {[len(r) for r in rows]} values")

    def describe(self) -> dict[str, str]:
        """What a verifier listing shows: the model, what runs it, a PRM's format."""
        described = {"model": self.engine.model, "backend": self.engine.backend}
        if self.kind == "prm":
            described["format"] = self.prm_format
        return described

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def shape(self) -> ModelShape | None:
        return self.engine.shape

    @property
    def step_token_id(self) -> int | None:
        if self.shepherd is not None:
            return self.shepherd.step_tag_id
        return self.engine.step_token_id

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
        """The token ids a PRM reads for these steps, in its format."""
        if self.shepherd is not None:
            text = shepherd_text(question, steps, self.shepherd.step_tag)
            return await self.engine.tokenize(text, add_special_tokens=True)
        return await self._conversation(question, "".join(f"{s}{STEP_TOKEN}" for s in steps))

    def _tags_match(self, prompt_ids: list[int], steps: int) -> bool:
        """Whether a Math-Shepherd prompt holds its tag exactly once per step."""
        if self.shepherd is None:
            return True
        found = prompt_ids.count(self.shepherd.step_tag_id)
        if found != steps:
            logger.warning("a solution of %d steps reads as %d step tags: not scored", steps, found)
        return found == steps

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
            0 < len(s) and len(p) <= self.max_model_len and self._tags_match(p, len(s))
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
        normalise = _softmax_label_one if self.shepherd is None else _p_good
        scores = [normalise(row) for row in rows]
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
