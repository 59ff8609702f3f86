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
different; late results still land in the caches for the next call. A check that times
out is cached as such (the answer keeps a class of its own), so it is never retried.
Requests grade through `for_request`, which adds a total grading deadline per request
and caps the request's share of the pool (`request_grading.RequestGrading`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import multiprocessing
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pebble import ProcessPool

from . import math_worker
from .math_worker import needs_check
from .normalize import normalize_answer
from .request_grading import DeadlinePassed, GradingTally, RequestGrading

logger = logging.getLogger(__name__)

T = TypeVar("T")
_FAILED = object()
_SKIPPED = object()


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
        self.workers = workers
        self._request: RequestGrading | None = None
        # Each worker imports sympy before it takes its first task (the initializer runs
        # before pebble starts a task's clock): a worker started late, or one that replaces
        # a killed or retired worker, would otherwise spend its first check's time limit
        # importing, and on a busy machine answer "not equivalent" by timeout.
        self._pool = ProcessPool(
            max_workers=workers,
            max_tasks=2000,
            initializer=math_worker.start_worker,
            context=multiprocessing.get_context("spawn"),
        )
        self._keys = _LRU(cache_size)  # normalised answer -> canonical key
        self._reps = _LRU(cache_size)  # canonical key -> the normalised answer checked for it
        self._pairs = _LRU(cache_size)  # unordered key pair -> verdict
        self._background: set[asyncio.Future] = set()
        self.timeouts = 0
        self.string_matches = 0
        self.sympy_checks = 0

    def for_request(self, deadline_s: float) -> MathGrader:
        """This grader for one request: the same workers and caches, plus the request's
        total grading deadline, its capped share of the pool and its own `tally`."""
        view = copy.copy(self)  # shares the pool and the cache objects
        view._request = RequestGrading.for_pool(self.workers, deadline_s)
        return view

    @property
    def tally(self) -> GradingTally | None:
        """What this request's grading cost (None: not a request's grader)."""
        return self._request.tally if self._request is not None else None

    @contextlib.asynccontextmanager
    async def _slot(self, start_by: float | None) -> AsyncIterator[None]:
        if self._request is None:
            yield
            return
        async with self._request.slot(start_by):
            yield

    async def _run(
        self,
        fn: Callable[..., T],
        *args: Any,
        limit_s: float | None = None,
        start_by: float | None = None,
    ) -> T:
        """Run `fn(*args)` in a worker; the pool kills the worker after the limit. A
        request's checks wait for one of its slots, and none starts after `start_by`."""
        async with self._slot(start_by):
            future = self._pool.schedule(fn, args=args, timeout=limit_s or self.timeout_s)
            return await asyncio.wrap_future(future)

    async def _try(self, fn: Callable[..., T], *args: str, start_by: float | None = None) -> Any:
        """`_run`, with a timeout or a sympy failure reported as `_FAILED`, and a check
        that was not started in time as `_SKIPPED` (not a verdict: nothing is cached)."""
        try:
            return await self._run(fn, *args, start_by=start_by)
        except DeadlinePassed:
            return _SKIPPED
        except (FutureTimeout, TimeoutError):
            self.timeouts += 1
            if self._request is not None:
                self._request.tally.timeouts += 1
            logger.warning("%s timed out on %.80r", fn.__name__, args)
        except Exception as exc:  # sympy/antlr failures on malformed LaTeX
            logger.debug("%s failed (%s) on %.80r", fn.__name__, exc, args)
        return _FAILED

    async def warm_up(self, within_s: float = 120.0) -> None:
        """Start every worker (each imports sympy first: seconds) before the first request.
        Waits until each has answered a task: the first worker ready would otherwise take
        every warm-up task while the others are still importing."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + within_s
        seen: set[int] = set()
        while len(seen) < self.workers and loop.time() < give_up:
            pids = await asyncio.gather(
                *(self._run(math_worker.worker_pid, limit_s=60) for _ in range(self.workers))
            )
            seen.update(pids)

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

    def _known_verdict(self, key_a: str, key_b: str) -> bool | None:
        """Equivalence as far as the keys and cached checks tell (None: unknown)."""
        if key_a == key_b:
            return True
        if not needs_check(key_a, key_b):
            return False
        return self._pairs.get(_pair(key_a, key_b))

    async def _verdict(
        self, a: str, key_a: str, b: str, key_b: str, start_by: float | None = None
    ) -> bool:
        """Equivalence of two answers with known keys: the keys, else a cached check
        (False, uncached, when the check could not start by `start_by`)."""
        known = self._known_verdict(key_a, key_b)
        if known is not None:
            return known
        rep_a, rep_b = self._reps.get(key_a, a), self._reps.get(key_b, b)
        result = await self._try(math_worker.check_pair, rep_a, rep_b, start_by=start_by)
        if result is _SKIPPED:
            return False
        self.sympy_checks += 1
        same = result is True
        self._pairs.put(_pair(key_a, key_b), same)
        return same

    async def canonical_key(self, answer: str, start_by: float | None = None) -> str:
        """The canonical key of an answer (computed once per grader; an answer whose
        key times out is keyed by its string for good). A key that could not start by
        `start_by` is the string key for this call only."""
        text = normalize_answer(answer)
        if text not in self._keys:
            key = await self._try(math_worker.canonical_key, text, start_by=start_by)
            if key is _SKIPPED:
                return "=str:" + text
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
        keying = [self._in_background(self.canonical_key(t, deadline)) for t in missing]
        await self._wait(keying, deadline)
        return {text: self._keys.get(text, "=str:" + text) for text in texts}

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """Vote-class id per answer (ids are 0, 1, ... in order of first appearance);
        None for a missing answer (or one that normalises to nothing). Within
        `2 * timeout_s`, and within what is left of a request's grading deadline."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        request = self._request
        left = request.remaining_s() if request is not None else float("inf")
        window = min(2 * self.timeout_s, left)
        try:
            return await self._group(answers, started + window)
        finally:
            if request is not None:
                ended = loop.time()
                request.spent(ended - started, ran_out=window == left and ended >= started + left)

    async def _group(self, answers: Sequence[str | None], deadline: float) -> list[int | None]:
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
        if not candidates:
            return None
        if asyncio.get_running_loop().time() >= deadline:  # out of time: what is known
            known = (i for i in candidates
                     if all(self._known_verdict(key, m) for m in classes[i]))  # fmt: skip
            return next(known, None)
        checks = {
            (i, member): self._in_background(
                self._verdict(rep_of_key[key], key, rep_of_key[member], member, deadline)
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
        """Stop the workers (a request's view leaves them to the grader it came from)."""
        if self._request is not None:
            return
        self._pool.stop()
        self._pool.join(timeout=10)
