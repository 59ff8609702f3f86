"""Async math-answer grading and grouping on a pool of worker processes.

Every sympy-touching call runs in a worker process with a timeout; a worker that
overruns is killed and replaced (pebble), so an adversarial answer costs one timeout
and never a stuck event loop or a stuck worker. Results are cached per grader.

Grouping N answers into equivalence classes (self-consistency votes) is cheap where it
can be: identical normalised strings are merged without sympy, each distinct answer is
parsed once into a canonical key (numbers by value), and only pairs of classes whose
keys cannot decide (non-numeric forms) are compared through math-verify.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pebble import ProcessPool

from . import math_worker
from .normalize import normalize_answer

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def _needs_check(key_a: str, key_b: str) -> bool:
    """Can two different canonical keys still be the same answer?

    Two numbers with different keys differ in value; a number never equals a symbolic
    expression, set or tuple. Expressions may (an interval and a tuple, two forms of a
    polynomial), and so may anything that did not parse.
    """
    kinds = {key_a.split(":", 1)[0], key_b.split(":", 1)[0]}
    return "str" in kinds or kinds == {"expr"}


class MathGrader:
    """Math equivalence with bounded time. One per server (or benchmark run)."""

    def __init__(
        self, *, workers: int = 2, timeout_s: float = 5.0, cache_size: int = 50_000
    ) -> None:
        self.timeout_s = timeout_s
        self._pool = ProcessPool(
            max_workers=workers, max_tasks=2000, context=multiprocessing.get_context("spawn")
        )
        self._keys = _LRU(cache_size)
        self._pairs = _LRU(cache_size)
        self.timeouts = 0
        self.string_matches = 0
        self.sympy_checks = 0

    async def _run(self, fn: Callable[..., T], *args: Any, limit_s: float | None = None) -> T:
        """Run `fn(*args)` in a worker; the pool kills the worker after the limit."""
        future = self._pool.schedule(fn, args=args, timeout=limit_s or self.timeout_s)
        return await asyncio.wrap_future(future)

    async def warm_up(self) -> None:
        """Start the workers and import sympy there (seconds), before the first request."""
        await asyncio.gather(*(self._run(math_worker.warm_up, limit_s=60) for _ in range(2)))

    async def is_equivalent(self, gold: str | None, prediction: str | None) -> bool:
        """Is `prediction` the same answer as `gold`? False on no answer or timeout."""
        if gold is None or prediction is None:
            return False
        gold, prediction = gold.strip(), prediction.strip()
        if not gold or not prediction:
            return False
        if normalize_answer(gold) == normalize_answer(prediction):
            self.string_matches += 1
            return True
        key = (gold, prediction)
        if key in self._pairs:
            return self._pairs[key]
        self.sympy_checks += 1
        try:
            result = await self._run(math_worker.equivalent, gold, prediction)
        except (FutureTimeout, TimeoutError):
            self.timeouts += 1
            logger.warning("equivalence check timed out: %.80r vs %.80r", gold, prediction)
            result = False
        except Exception as exc:  # sympy/antlr failures on malformed LaTeX
            logger.debug("equivalence check failed (%s): %.80r vs %.80r", exc, gold, prediction)
            result = False
        self._pairs.put(key, result)
        return result

    async def canonical_key(self, answer: str) -> str:
        normalized = normalize_answer(answer)
        if normalized in self._keys:
            return self._keys[normalized]
        try:
            key = await self._run(math_worker.canonical_key, answer)
        except (FutureTimeout, TimeoutError):
            self.timeouts += 1
            logger.warning("answer parsing timed out: %.80r", answer)
            key = "str:" + normalized
        except Exception:
            key = "str:" + normalized
        self._keys.put(normalized, key)
        return key

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """Equivalence-class id per answer (ids are 0, 1, ... in order of first
        appearance); None for a missing answer."""
        present = [i for i, a in enumerate(answers) if a is not None and a.strip()]
        distinct: dict[str, int] = {}
        for i in present:
            distinct.setdefault(normalize_answer(answers[i]), i)
        reps = list(distinct.values())
        keys = await asyncio.gather(*(self.canonical_key(answers[i]) for i in reps))

        by_key: dict[str, int] = {}
        classes: list[int] = []  # representative answer index of each class
        class_of_rep: dict[int, int] = {}
        for rep, key in zip(reps, keys, strict=True):
            if key not in by_key:
                by_key[key] = len(classes)
                classes.append(rep)
            class_of_rep[rep] = by_key[key]
        class_keys = [None] * len(classes)
        for key, index in by_key.items():
            class_keys[index] = key

        union = _UnionFind(len(classes))
        undecided = [
            (a, b)
            for a in range(len(classes))
            for b in range(a + 1, len(classes))
            if _needs_check(class_keys[a], class_keys[b])
        ]
        verdicts = await asyncio.gather(
            *(self._either_way(answers[classes[a]], answers[classes[b]]) for a, b in undecided)
        )
        for (a, b), same in zip(undecided, verdicts, strict=True):
            if same:
                union.union(a, b)

        labels: list[int | None] = [None] * len(answers)
        renumber: dict[int, int] = {}
        for i in present:
            root = union.find(class_of_rep[distinct[normalize_answer(answers[i])]])
            labels[i] = renumber.setdefault(root, len(renumber))
        return labels

    async def _either_way(self, a: str, b: str) -> bool:
        return await self.is_equivalent(a, b) or await self.is_equivalent(b, a)

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)
