"""Async math-answer grading and grouping on a pool of worker processes.

Every sympy-touching call runs in a worker process with a timeout; a worker that
overruns is killed and replaced (pebble), so an adversarial answer costs one timeout
and never a stuck event loop or a stuck worker.

Equivalence is decided in three steps, cheapest first, and is symmetric by
construction: (1) equal normalised strings (`normalize.normalize_answer`) are
equivalent; (2) otherwise each string's canonical key (`math_worker.canonical`, cached
per grader) decides: equal keys are equivalent, unequal exact keys are not; (3) only
pairs the keys cannot decide go to math-verify, which must accept them in both orders.
Verdicts are cached by the (unordered) pair of keys, so one request never checks a
pair twice and later requests reuse it.

Grouping for votes is a partition in which the members of a class are pairwise
equivalent (never a transitive chain: `(15,-29)` and `\\{15,-29\\}` never meet through a
third answer). Distinct keys are visited in a fixed order (sorted by key, not by input
position); each joins the first class whose representative, and every other member,
it is equivalent to (equal keys are one member; exact keys settle most pairs without a
check), else opens a class. The partition does not depend on the order of the answers.

Time bounds: `is_equivalent` runs at most one worker task (limit `timeout_s`).
`group` has a wall-clock budget of `2 * timeout_s`: an answer whose key is not ready by
then is grouped by its normalised string alone, and pairs not checked by then count as
different; late results still land in the caches for the next call.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pebble import ProcessPool

from . import math_worker
from .math_worker import needs_check
from .normalize import normalize_answer

logger = logging.getLogger(__name__)

T = TypeVar("T")
_FAILED = object()


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


def _pair(key_a: str, key_b: str) -> tuple[str, str]:
    return (key_a, key_b) if key_a <= key_b else (key_b, key_a)


class MathGrader:
    """Math equivalence with bounded time. One per server (or benchmark run)."""

    def __init__(
        self, *, workers: int = 2, timeout_s: float = 5.0, cache_size: int = 50_000
    ) -> None:
        self.timeout_s = timeout_s
        self._pool = ProcessPool(
            max_workers=workers, max_tasks=2000, context=multiprocessing.get_context("spawn")
        )
        self._keys = _LRU(cache_size)  # normalised answer -> canonical key
        self._reps = _LRU(cache_size)  # canonical key -> the normalised answer checked for it
        self._pairs = _LRU(cache_size)  # unordered key pair -> verdict
        self._background: set[asyncio.Future] = set()
        self.timeouts = 0
        self.string_matches = 0
        self.sympy_checks = 0

    async def _run(self, fn: Callable[..., T], *args: Any, limit_s: float | None = None) -> T:
        """Run `fn(*args)` in a worker; the pool kills the worker after the limit."""
        future = self._pool.schedule(fn, args=args, timeout=limit_s or self.timeout_s)
        return await asyncio.wrap_future(future)

    async def _try(self, fn: Callable[..., T], *args: str) -> T | object:
        """`_run`, with a timeout or a sympy failure reported as `_FAILED`."""
        try:
            return await self._run(fn, *args)
        except (FutureTimeout, TimeoutError):
            self.timeouts += 1
            logger.warning("%s timed out on %.80r", fn.__name__, args)
        except Exception as exc:  # sympy/antlr failures on malformed LaTeX
            logger.debug("%s failed (%s) on %.80r", fn.__name__, exc, args)
        return _FAILED

    async def warm_up(self) -> None:
        """Start the workers and import sympy there (seconds), before the first request."""
        await asyncio.gather(*(self._run(math_worker.warm_up, limit_s=60) for _ in range(2)))

    async def is_equivalent(self, gold: str | None, prediction: str | None) -> bool:
        """Is `prediction` the same answer as `gold`? Symmetric; False on no answer or
        timeout."""
        if gold is None or prediction is None:
            return False
        a, b = normalize_answer(gold), normalize_answer(prediction)
        if not a or not b:
            return False
        if a == b:
            self.string_matches += 1
            return True
        if a in self._keys and b in self._keys:
            return await self._verdict(a, self._keys[a], b, self._keys[b])
        failed = ("failed", *sorted((a, b)))
        if failed in self._pairs:
            return False
        result = await self._try(math_worker.decide, a, b)
        if result is _FAILED:
            self._pairs.put(failed, False)  # one timeout per pair, not one per request
            return False
        key_a, key_b, same = result
        self._remember_key(a, key_a)
        self._remember_key(b, key_b)
        if needs_check(key_a, key_b):
            self.sympy_checks += 1
            self._pairs.put(_pair(key_a, key_b), same)
        return same

    def _remember_key(self, text: str, key: str) -> None:
        self._keys.put(text, key)
        if key not in self._reps:
            self._reps.put(key, text)

    async def _verdict(self, a: str, key_a: str, b: str, key_b: str) -> bool:
        """Equivalence of two answers with known keys: the keys, else a cached check."""
        if key_a == key_b:
            return True
        if not needs_check(key_a, key_b):
            return False
        pair = _pair(key_a, key_b)
        if pair in self._pairs:
            return self._pairs[pair]
        self.sympy_checks += 1
        rep_a, rep_b = self._reps.get(key_a, a), self._reps.get(key_b, b)
        result = await self._try(math_worker.check_pair, rep_a, rep_b)
        same = result is True
        self._pairs.put(pair, same)
        return same

    async def canonical_key(self, answer: str) -> str:
        """The canonical key of an answer (computed once per grader)."""
        text = normalize_answer(answer)
        if text not in self._keys:
            key = await self._try(math_worker.canonical_key, text)
            self._remember_key(text, key if isinstance(key, str) else "=str:" + text)
        return self._keys[text]

    def _in_background(self, awaitable: Awaitable[Any]) -> asyncio.Future:
        future = asyncio.ensure_future(awaitable)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        return future

    async def _wait(self, futures: list[asyncio.Future], deadline: float) -> None:
        """Wait for the futures until the deadline; late ones go on (and fill caches)."""
        remaining = deadline - asyncio.get_running_loop().time()
        if futures and remaining > 0:
            await asyncio.wait(futures, timeout=remaining)

    async def _keys_for(self, texts: list[str], deadline: float) -> dict[str, str]:
        missing = [text for text in texts if text not in self._keys]
        await self._wait([self._in_background(self.canonical_key(t)) for t in missing], deadline)
        return {text: self._keys.get(text, "=str:" + text) for text in texts}

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """Vote-class id per answer (ids are 0, 1, ... in order of first appearance);
        None for a missing answer (or one that normalises to nothing)."""
        deadline = asyncio.get_running_loop().time() + 2 * self.timeout_s
        texts = [normalize_answer(a) if a is not None else "" for a in answers]
        distinct = sorted({text for text in texts if text})
        keys = await self._keys_for(distinct, deadline)
        rep_of_key: dict[str, str] = {}
        for text in distinct:  # sorted: the representative of a key is its smallest text
            rep_of_key.setdefault(keys[text], text)
        classes: list[list[str]] = []  # the keys in each class, representative first
        class_of_key: dict[str, int] = {}
        for key in sorted(rep_of_key):
            joined = await self._join(key, classes, rep_of_key, deadline)
            if joined is None:
                joined = len(classes)
                classes.append([])
            classes[joined].append(key)
            class_of_key[key] = joined
        labels: list[int | None] = [None] * len(answers)
        renumber: dict[int, int] = {}
        for index, text in enumerate(texts):
            if text:
                labels[index] = renumber.setdefault(class_of_key[keys[text]], len(renumber))
        return labels

    async def _join(
        self, key: str, classes: list[list[str]], rep_of_key: dict[str, str], deadline: float
    ) -> int | None:
        """The first class whose representative -- and every other member, so that a
        class never holds two answers that are not equivalent -- is equivalent to `key`;
        None when there is none (or no time is left to check)."""
        candidates = [i for i, members in enumerate(classes) if needs_check(key, members[0])]
        if not candidates or asyncio.get_running_loop().time() >= deadline:
            return None
        checks = {
            (i, member): self._in_background(
                self._verdict(rep_of_key[key], key, rep_of_key[member], member)
            )
            for i in candidates
            for member in classes[i]
        }
        await self._wait(list(checks.values()), deadline)
        for i in candidates:
            verdicts = [checks[(i, member)] for member in classes[i]]
            if all(check.done() and check.result() for check in verdicts):
                return i
        return None

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)
