"""The service entry below HTTP (`ttscale.strategies.service.Service`), on the scripted engine.

One request in, one result out: every check happens in `prepare`, before any sample;
the request id reaches every engine request and verifier call; cancelling `run` aborts
the samples and bills them; the request's sampling fields are a strategy's defaults.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from ttscale.engine.types import SamplingSpec
from ttscale.strategies.base import Verifiers
from ttscale.strategies.errors import InvalidRequest, ModelNotFound
from ttscale.strategies.registry import discover
from ttscale.strategies.service import Service, ServiceLimits, ServiceRequest
from ttscale.strategies.strategy_choice import StrategyChoice

from .support.fakes import Scripted, ScriptedEngine
from .test_strategies_logic import FakeOutcomeVerifier, answers_engine

MESSAGES = [{"role": "user", "content": "What is 6 * 7?"}]


def service(engine, grader, **limits) -> tuple[Service, FakeOutcomeVerifier]:
    judge = FakeOutcomeVerifier(lambda text: 0.5)
    verifiers = Verifiers(grader, outcome={"judge": judge})
    return Service(engine, verifiers, discover(), ServiceLimits(**limits)), judge


def request(**fields) -> ServiceRequest:
    fields.setdefault("model", "scripted")
    fields.setdefault("messages", MESSAGES)
    return ServiceRequest(request_id="req-abc", **fields)


def choose(strategy: str, **params) -> StrategyChoice:
    return StrategyChoice(strategy=strategy, params=params)


async def test_the_request_id_reaches_every_engine_request_and_verifier(grader):
    engine = answers_engine(["42", "42", "41"])
    svc, judge = service(engine, grader)
    params = {"n": 3, "weighting": "verifier", "verifier": "judge", "sampling": {"seed": 0}}
    result = await svc.complete(request(choice=choose("self_consistency", **params)))
    assert result.strategy == "self_consistency" and result.evidence["answer"] == "42"
    # the client's id, made unique per run (ids may repeat; vLLM aborts by id), then
    # the sample number
    run_id = judge.request_ids[0]
    assert re.fullmatch(r"req-abc-[0-9a-f]{8}", run_id)
    assert sorted(engine.request_ids) == [f"{run_id}-{i}" for i in range(3)]


async def test_plain_sampling_returns_n_choices_and_counts_the_prompt_once(grader):
    """As vLLM's server counts it: the prefix cache reads a plain request's prompt once."""
    engine = ScriptedEngine(lambda prompt, spec, index: Scripted(f"seed {spec.seed}"))
    svc, _ = service(engine, grader)
    result = await svc.complete(request(n=3, sampling=SamplingSpec(seed=7, max_tokens=20)))
    assert result.strategy == "none" and result.evidence is None
    assert [c.text for c in result.choices] == ["seed 7", "seed 8", "seed 9"]
    prompt = len(await engine.render_chat(MESSAGES))
    assert result.usage.prompt_tokens == prompt
    assert result.usage.cached_prompt_tokens <= result.usage.prompt_tokens
    assert result.usage.generated_tokens == 3 * len("seed 7")


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"model": "other"}, ModelNotFound, "model"),
        ({"n": 65}, InvalidRequest, "n"),
        ({"choice": choose("nope")}, InvalidRequest, "choice.strategy"),
        ({"n": 2, "choice": choose("best_of_n")}, InvalidRequest, "n"),
        ({"choice": choose("best_of_n", n=0)}, InvalidRequest, "choice.params.n"),
        ({"choice": choose("best_of_n", bogus=1)}, InvalidRequest, "choice.params.bogus"),
        ({"sampling": SamplingSpec(max_tokens=5000)}, InvalidRequest, "sampling.max_tokens"),
        (
            {"choice": StrategyChoice(strategy="best_of_n", budget={"max_generated_tokens": 8})},
            InvalidRequest,
            "choice.budget.max_generated_tokens",
        ),
    ],
)
async def test_prepare_refuses_bad_requests_before_any_sample(grader, fields, error, param):
    engine = answers_engine(["1"])
    svc, _ = service(engine, grader)
    with pytest.raises(error) as caught:
        await svc.prepare(request(**fields))
    assert caught.value.param == param
    assert engine.calls == []


async def test_plain_sampling_obeys_the_request_cap_and_refuses_strategy_fields(grader):
    svc, _ = service(answers_engine(["1"]), grader, max_request_tokens=100)
    with pytest.raises(InvalidRequest, match=r"n x sampling\.max_tokens = 120 exceeds"):
        await svc.prepare(request(n=3, sampling=SamplingSpec(max_tokens=40)))
    with pytest.raises(InvalidRequest, match=r"need a choice\.strategy"):
        await svc.prepare(request(choice=StrategyChoice(params={"n": 4})))


async def test_a_refine_prompt_with_a_stray_placeholder_is_refused_before_sampling(grader):
    engine = answers_engine(["1"])
    svc, _ = service(engine, grader)
    choice = choose("inverse_entropy", mode="sequential", refine_prompt="fix {x}")
    with pytest.raises(InvalidRequest, match="only placeholder is"):
        await svc.prepare(request(choice=choice))
    assert engine.calls == []


async def test_a_prompt_longer_than_the_context_is_refused(grader):
    svc, _ = service(ScriptedEngine(lambda *a: Scripted("x"), max_model_len=8), grader)
    with pytest.raises(InvalidRequest) as caught:
        await svc.prepare(request())
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"


async def test_request_sampling_fields_are_the_strategys_defaults(grader):
    engine = answers_engine(["1"])
    svc, _ = service(engine, grader)
    unset = await svc.prepare(request(choice=choose("best_of_n", n=1)))
    assert unset.params.sampling.temperature == 0.8  # the strategy's own default
    assert unset.params.sampling.max_tokens == 512  # the service default, fits the context
    asked = await svc.prepare(
        request(sampling=SamplingSpec(temperature=0.3), choice=choose("best_of_n", n=1))
    )
    assert asked.params.sampling.temperature == 0.3
    overridden = await svc.prepare(
        request(
            sampling=SamplingSpec(temperature=0.3),
            choice=choose("best_of_n", n=1, sampling={"temperature": 1.1}),
        )
    )
    assert overridden.params.sampling.temperature == 1.1


async def test_cancelling_a_run_aborts_its_samples_and_bills_them(grader):
    engine = ScriptedEngine(lambda *a: Scripted("y" * 100, seconds=5.0))
    svc, _ = service(engine, grader)
    prepared = await svc.prepare(request(choice=choose("self_consistency", n=4)))
    task = asyncio.create_task(svc.execute(prepared))
    while await engine.num_running() < 4:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await engine.num_running() == 0
    spent = prepared.spent()
    assert spent.samples_aborted == 4 and spent.aborted_tokens > 0


async def test_an_adaptive_request_follows_the_load_of_the_services_other_requests(grader):
    """A plain n=4 request fills the engine (fill 4): an adaptive request beside it
    draws one sample at a time; alone, it draws at once the three its vote surely needs."""
    engine = ScriptedEngine(  # the plain request's samples (50 tokens) outlast the test
        lambda p, spec, i: Scripted("\\boxed{42}", seconds=60.0 if spec.max_tokens == 50 else 0.1)
    )
    svc, _ = service(engine, grader, engine_fill=4)
    adaptive = request(choice=choose("self_consistency", n=16, adaptive=True))
    plain = asyncio.ensure_future(svc.complete(request(n=4, sampling=SamplingSpec(max_tokens=50))))
    await asyncio.sleep(0.1)
    assert svc.load.running == 4
    beside = await svc.complete(adaptive)
    plain.cancel()
    await asyncio.gather(plain, return_exceptions=True)
    assert svc.load.running == 0
    alone = await svc.complete(adaptive)
    assert beside.evidence["details"]["most_in_flight"] == 1
    assert alone.evidence["details"]["most_in_flight"] == 3
    assert svc.load.running == 0
