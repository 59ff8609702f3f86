"""LLM-as-judge / self-verification: score = P("Yes") read from the model's logprobs.

The judge asks the (policy or another) model whether a solution, or one step of it, is
correct, and reads the probability of the answer tokens at the first generated
position instead of sampling a verdict. That makes it a graded, discriminative score
with any instruct model, the tiny embedded default included. The log-probabilities of
every spelling of "Yes" and "No" are requested explicitly (`logprob_token_ids`), so the
score does not depend on them being in the top-k.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ttscale.engine.protocol import Engine
from ttscale.engine.types import ModelShape, SamplingSpec

from .protocol import OutcomeScores, StepScores, VerifierUsage

SOLUTION_PROMPT = (
    "Here is a math problem and a proposed solution.\n\n"
    "Problem:\n{question}\n\nProposed solution:\n{solution}\n\n"
    "Is the proposed solution correct? Answer with a single word, Yes or No."
)
STEP_PROMPT = (
    "Here is a math problem, the steps of a solution so far, and a new step.\n\n"
    "Problem:\n{question}\n\nSteps so far:\n{previous}\n\nNew step:\n{step}\n\n"
    "Is the new step correct? Answer with a single word, Yes or No."
)
_YES = ("Yes", " Yes", "yes", " yes", "YES")
_NO = ("No", " No", "no", " no", "NO")


@dataclass(frozen=True, slots=True)
class JudgeScore:
    score: float
    """P(Yes) / (P(Yes) + P(No)): in [0, 1], 0.5 when the model has no preference."""
    p_yes: float
    p_no: float
    usage: VerifierUsage


class LLMJudge:
    """Scores solutions or steps with P("Yes") from an engine's logprobs."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._yes_ids: tuple[int, ...] | None = None
        self._no_ids: tuple[int, ...] | None = None

    def describe(self) -> dict[str, str]:
        """What a verifier listing shows: the judging model and what runs it."""
        return {"model": self._engine.info.model_name, "backend": self._engine.info.backend}

    @property
    def shape(self) -> ModelShape | None:
        """The policy's: it judges with the policy's engine."""
        return self._engine.info.shape

    async def close(self) -> None:
        """Nothing of its own to stop: it judges with the policy's engine."""

    async def _answer_token_ids(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self._yes_ids is None or self._no_ids is None:
            self._yes_ids = await self._single_token_ids(_YES)
            self._no_ids = await self._single_token_ids(_NO)
            if not self._yes_ids or not self._no_ids:
                raise ValueError("the tokenizer has no single-token spelling of Yes/No")
        return self._yes_ids, self._no_ids

    async def _single_token_ids(self, spellings: Sequence[str]) -> tuple[int, ...]:
        ids: list[int] = []
        for spelling in spellings:
            tokens = await self._engine.tokenize(spelling)
            if len(tokens) == 1 and tokens[0] not in ids:
                ids.append(tokens[0])
        return tuple(ids)

    async def score_solution(
        self, question: str, solution: str, *, request_id: str | None = None
    ) -> JudgeScore:
        return await self._ask(self._solution_prompt(question, solution), request_id)

    async def score_step(
        self,
        question: str,
        previous: Sequence[str],
        step: str,
        *,
        request_id: str | None = None,
    ) -> JudgeScore:
        return await self._ask(self._step_prompt(question, previous, step), request_id)

    def _solution_prompt(self, question: str, solution: str) -> str:
        return SOLUTION_PROMPT.format(question=question, solution=solution)

    def _step_prompt(self, question: str, previous: Sequence[str], step: str) -> str:
        return STEP_PROMPT.format(
            question=question, previous="\n\n".join(previous) or "(none)", step=step
        )

    async def _prompt_cost(self, prompt: str) -> int:
        """Exact tokens of one judgement: its rendered prompt plus the one answer token."""
        return len(await self._engine.render_chat([{"role": "user", "content": prompt}])) + 1

    async def estimate_outcome_tokens(self, question: str, solutions: Sequence[str]) -> int:
        costs = [self._prompt_cost(self._solution_prompt(question, s)) for s in solutions]
        return sum(await asyncio.gather(*costs))

    async def estimate_step_tokens(
        self, question: str, solutions: Sequence[Sequence[str]], *, last_only: bool = False
    ) -> int:
        costs = [
            self._prompt_cost(self._step_prompt(question, steps[:i], steps[i]))
            for steps in solutions
            for i in _judged_positions(steps, last_only)
        ]
        return sum(await asyncio.gather(*costs))

    async def score_outcomes(
        self, question: str, solutions: Sequence[str], *, request_id: str | None = None
    ) -> OutcomeScores:
        judged = await asyncio.gather(
            *(
                self.score_solution(question, s, request_id=_sub_id(request_id, f"judge{i}"))
                for i, s in enumerate(solutions)
            )
        )
        return OutcomeScores([j.score for j in judged], _total_usage(judged))

    async def score_steps(
        self,
        question: str,
        solutions: Sequence[Sequence[str]],
        *,
        last_only: bool = False,
        request_id: str | None = None,
    ) -> StepScores:
        """Each step judged given the steps before it; `last_only`: just the final step
        (step-level search needs only the newest one)."""

        async def one(number: int, steps: Sequence[str]) -> list[JudgeScore]:
            positions = _judged_positions(steps, last_only)
            asks = [
                self.score_step(
                    question,
                    steps[:i],
                    steps[i],
                    request_id=_sub_id(request_id, f"judge{number}.{i}"),
                )
                for i in positions
            ]
            return list(await asyncio.gather(*asks))

        judged = await asyncio.gather(*(one(n, steps) for n, steps in enumerate(solutions)))
        usage = _total_usage([j for per_solution in judged for j in per_solution])
        return StepScores([[j.score for j in per_solution] for per_solution in judged], usage)

    async def _ask(self, prompt: str, request_id: str | None = None) -> JudgeScore:
        yes_ids, no_ids = await self._answer_token_ids()
        prompt_ids = await self._engine.render_chat([{"role": "user", "content": prompt}])
        spec = SamplingSpec(temperature=0.0, max_tokens=1, logprob_token_ids=(*yes_ids, *no_ids))
        result = await self._engine.generate(prompt_ids, spec, request_id=request_id)
        sample = result.samples[0]
        labels = (sample.label_logprobs or [{}])[0]
        p_yes = sum(math.exp(labels[t]) for t in yes_ids if t in labels)
        p_no = sum(math.exp(labels[t]) for t in no_ids if t in labels)
        total = p_yes + p_no
        score = p_yes / total if total > 0 else 0.5
        usage = VerifierUsage(
            prompt_tokens=result.prompt_tokens,
            cached_prompt_tokens=result.cached_prompt_tokens,
            generated_tokens=result.generated_tokens,
        )
        return JudgeScore(score=score, p_yes=p_yes, p_no=p_no, usage=usage)


def _sub_id(request_id: str | None, part: str) -> str | None:
    """Engine request id of one judgement of a request (None: the engine picks one)."""
    return None if request_id is None else f"{request_id}-{part}"


def _total_usage(judged: Sequence[JudgeScore]) -> VerifierUsage:
    total = VerifierUsage()
    for judge_score in judged:
        total = total + judge_score.usage
    return total


def _judged_positions(steps: Sequence[str], last_only: bool) -> range:
    return range(len(steps) - 1, len(steps)) if last_only and steps else range(len(steps))
