"""The benchmark runner on a scripted engine: grading, resume, interruption, failures.

The same runner drives the real engine in test_bench_engine; here each sample's text and
duration are scripted, so resume and Ctrl-C can be checked exactly.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from pathlib import Path

import httpx
import pytest

from ttscale.benchmarks.backends import (
    HttpBackend,
    InProcessBackend,
    ProblemTooLong,
    RequestRejected,
)
from ttscale.benchmarks.datasets import (
    BenchError,
    Problem,
    Selection,
    load_dataset,
    load_problems,
    select,
)
from ttscale.benchmarks.grid import SamplingConfig, build_grid, problem_seed
from ttscale.benchmarks.progress import Progress
from ttscale.benchmarks.records import (
    RECORDS,
    RecordWriter,
    RunConfig,
    open_run,
    read_records,
)
from ttscale.benchmarks.runner import GivingUp, Runner, grade, render_prompt
from ttscale.strategies.base import Verifiers
from ttscale.strategies.registry import discover
from ttscale.strategies.service import Service, ServiceLimits

from .support.bench_fixtures import record, trace
from .support.fakes import Scripted, ScriptedEngine

PROBLEMS = [
    Problem(dataset="toy", id="easy", problem="What is 9 + 9?", answer="18"),
    Problem(dataset="toy", id="hard", problem="What is 2 + 6?", answer="8"),
]
SAMPLING = SamplingConfig(temperature=0.7, max_tokens=40)


def _script(slow_on: str | None = None, seconds: float = 30.0):
    """'easy' is answered 18 (right); 'hard' alternates 8 (right) and 7 by seed parity."""

    def script(prompt, spec, index):
        text = "".join(chr(t) for t in prompt)
        delay = seconds if slow_on and slow_on in text else 0.0
        if "9 + 9" in text:
            return Scripted("So \\boxed{18}.", seconds=delay, entropy=0.5)
        answer = 8 if spec.seed % 2 == 0 else 7
        return Scripted(f"It is \\boxed{{{answer}}}.", seconds=delay, entropy=0.5)

    return script


def _runner(engine, grader, out: Path, **kwargs) -> Runner:
    backend = InProcessBackend(Service(engine, Verifiers(grader), discover()))
    return Runner(backend, grader, out, progress_stream=io.StringIO(), **kwargs)


def _grid(*specs: str, budgets=(1, 2)):
    return build_grid(list(specs), list(budgets), SAMPLING, discover())


async def test_every_setting_runs_on_every_problem_with_graded_samples(grader, tmp_path):
    engine = ScriptedEngine(_script())
    outcome = await _runner(engine, grader, tmp_path).run(PROBLEMS, _grid("self_consistency"))
    assert (outcome.done, outcome.skipped, outcome.failures) == (4, 0, [])
    records = {r.key: r for r in read_records(tmp_path)}
    easy = records[("self_consistency@2", "toy", "easy")]
    assert easy.correct and easy.answer == "18" and easy.gold == "18"
    assert [s.correct for s in easy.samples] == [True, True]
    assert [s.index for s in easy.samples] == [0, 1]  # which seed each is (seed + index)
    assert (
        easy.generated_tokens == sum(s.tokens for s in easy.samples) == 2 * len("So \\boxed{18}.")
    )
    hard = records[("self_consistency@2", "toy", "hard")]
    assert {s.answer for s in hard.samples} == {"7", "8"}
    assert {s.answer: s.correct for s in hard.samples} == {"7": False, "8": True}
    assert len({s.answer_class for s in hard.samples}) == 2
    # every setting draws the same samples for a problem: N=1 is a prefix of N=2
    seeds = {r.params["sampling"]["seed"] for r in records.values() if r.problem_id == "hard"}
    assert seeds == {problem_seed(0, "hard")}
    assert easy.params["sampling"]["logprobs"] == 20
    assert easy.samples[0].mean_entropy == pytest.approx(0.5)


async def test_a_rerun_skips_what_is_recorded(grader, tmp_path):
    engine = ScriptedEngine(_script())
    grid = _grid("self_consistency")
    await _runner(engine, grader, tmp_path).run(PROBLEMS, grid)
    calls = len(engine.calls)
    outcome = await _runner(engine, grader, tmp_path).run(PROBLEMS, grid)
    assert (outcome.done, outcome.skipped) == (0, 4)
    assert len(engine.calls) == calls
    more = await _runner(engine, grader, tmp_path).run(PROBLEMS, grid + _grid("best_of_n"))
    assert (more.done, more.skipped) == (4, 4)
    assert len(read_records(tmp_path)) == 8


async def test_interrupting_keeps_finished_work_and_aborts_the_rest(grader, tmp_path):
    slow = ScriptedEngine(_script(slow_on="2 + 6"))
    grid = _grid("self_consistency")
    task = asyncio.create_task(_runner(slow, grader, tmp_path).run(PROBLEMS, grid))
    while len(read_records(tmp_path)) < 2 or await slow.num_running() == 0:
        await asyncio.sleep(0.01)
    task.cancel()  # what Ctrl-C does to the running benchmark
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await slow.num_running() == 0  # the slow problem's samples were aborted
    assert {r.problem_id for r in read_records(tmp_path)} == {"easy"}

    fast = ScriptedEngine(_script())
    outcome = await _runner(fast, grader, tmp_path).run(PROBLEMS, grid)
    assert (outcome.done, outcome.skipped) == (2, 2)
    assert all("2 + 6" in "".join(map(chr, prompt)) for prompt, _ in fast.calls)
    keys = [r.key for r in read_records(tmp_path)]
    assert len(keys) == len(set(keys)) == 4


class _FailingOn:
    """A backend that fails on one problem, as a flaky server would."""

    def __init__(self, inner, problem_text: str, error: Exception) -> None:
        self.inner, self.problem_text, self.error = inner, problem_text, error
        self.model_name, self.kind = inner.model_name, inner.kind

    async def solve(self, messages, setting, params):
        if self.problem_text in messages[0]["content"]:
            raise self.error
        return await self.inner.solve(messages, setting, params)


async def test_a_failed_job_is_reported_not_recorded_and_retried(grader, tmp_path):
    engine = ScriptedEngine(_script())
    inner = InProcessBackend(Service(engine, Verifiers(grader), discover()))
    flaky = _FailingOn(inner, "2 + 6", RuntimeError("HTTP 502: bad gateway"))
    runner = Runner(flaky, grader, tmp_path, progress_stream=io.StringIO())
    outcome = await runner.run(PROBLEMS, _grid("self_consistency"))
    assert outcome.done == 2
    assert len(outcome.failures) == 2
    assert "toy/hard self_consistency@1: HTTP 502: bad gateway" in outcome.failures
    retry = await _runner(engine, grader, tmp_path).run(PROBLEMS, _grid("self_consistency"))
    assert (retry.done, retry.skipped, retry.failures) == (2, 2, [])


async def test_a_rejected_request_stops_the_whole_run(grader, tmp_path):
    engine = ScriptedEngine(_script())
    inner = InProcessBackend(Service(engine, Verifiers(grader), discover()))
    rejecting = _FailingOn(inner, "9 + 9", RequestRejected("n=2 exceeds this server's limit"))
    runner = Runner(rejecting, grader, tmp_path, progress_stream=io.StringIO())
    with pytest.raises(RequestRejected, match="limit"):
        await runner.run(PROBLEMS, _grid("self_consistency"))


def test_a_torn_last_line_is_ignored_then_removed(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.write(record("p1", "self_consistency", 1, True))
    writer.close()
    path = tmp_path / RECORDS
    path.write_text(path.read_text() + '{"dataset": "gsm8k", "problem_')  # killed mid-write
    assert [r.problem_id for r in read_records(tmp_path)] == ["p1"]
    writer = RecordWriter(tmp_path)
    writer.write(record("p2", "self_consistency", 1, True))
    writer.close()
    assert [r.problem_id for r in read_records(tmp_path)] == ["p1", "p2"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_damaged_line_in_the_middle_is_an_error(tmp_path):
    good = record("p1", "self_consistency", 1, True).model_dump_json()
    (tmp_path / RECORDS).write_text(f"{good}\nnot json\n{good}\n")
    with pytest.raises(BenchError, match=":2: not a benchmark record"):
        read_records(tmp_path)


def test_a_directory_with_another_run_is_not_mixed(tmp_path):
    config = RunConfig(
        model="m", backend="in-process", prompt_template="{problem}", sampling=SAMPLING
    )
    open_run(tmp_path, config)
    open_run(tmp_path, config)  # the same run resumes
    other = config.model_copy(update={"sampling": SAMPLING.model_copy(update={"max_tokens": 99})})
    with pytest.raises(BenchError, match="different sampling"):
        open_run(tmp_path, other)
    with pytest.raises(BenchError, match="different model"):
        open_run(tmp_path, config.model_copy(update={"model": "other"}))
    elsewhere = config.model_copy(update={"model_source": "/elsewhere/m"})  # same name
    with pytest.raises(BenchError, match="different model_source"):
        open_run(tmp_path, elsewhere)


def test_a_run_in_another_dtype_is_not_mixed_in(tmp_path):
    """bf16 and float32 samples of one seed differ on a CPU, so their records are two runs."""
    fp32 = RunConfig(
        model="m", backend="in-process", dtype="float32", prompt_template="{problem}",
        sampling=SAMPLING,
    )  # fmt: skip
    open_run(tmp_path / "fp32", fp32)
    with pytest.raises(BenchError, match="different dtype"):
        open_run(tmp_path / "fp32", fp32.model_copy(update={"dtype": "bfloat16"}))
    open_run(tmp_path / "unrecorded", fp32.model_copy(update={"dtype": None}))
    with pytest.raises(BenchError, match="recorded before dtypes were kept, add its dtype"):
        open_run(tmp_path / "unrecorded", fp32)


def test_grid_sets_each_strategys_budget_knob_and_token_cap():
    grid = build_grid(
        ["self_consistency", "multi_temperature", "adaptive=self_consistency?adaptive=true"],
        [1, 4],
        SAMPLING,
        discover(),
    )
    labels = [s.label for s in grid]
    assert labels == [
        "self_consistency@1", "self_consistency@4", "multi_temperature@1",
        "multi_temperature@4", "adaptive@1", "adaptive@4",
    ]  # fmt: skip
    by = {s.label: s for s in grid}
    assert by["self_consistency@4"].params["n"] == 4
    assert by["multi_temperature@4"].params["samples_per_temperature"] == 4
    assert by["adaptive@4"].params["adaptive"] is True
    assert by["adaptive@4"].family == "adaptive"
    # the cap is (samples the setting draws) x max_tokens; temperature 0 draws once
    assert by["self_consistency@4"].budget == {"max_generated_tokens": 4 * 40}
    assert by["adaptive@1"].budget == {"max_generated_tokens": 40}
    assert by["multi_temperature@4"].budget == {"max_generated_tokens": (1 + 3 * 4) * 40}
    (search,) = build_grid(["step_search?verifier=judge"], [2], SAMPLING, discover())
    assert search.params["expansions"] == 2 and search.budget == {}  # no fixed sample count
    assert by["self_consistency@4"].params["sampling"] == {
        "temperature": 0.7, "top_p": 1.0, "max_tokens": 40, "logprobs": 20,
    }  # fmt: skip


def test_grid_spec_options_and_errors():
    spec = "self_consistency?sampling.temperature=1.0&budget.max_generated_tokens=50"
    (setting,) = build_grid([spec], [2], SAMPLING, discover())
    assert setting.params["sampling"]["temperature"] == 1.0
    assert setting.budget == {"max_generated_tokens": 50}
    assert (
        setting.label
        == "self_consistency(sampling.temperature=1.0,budget.max_generated_tokens=50)@2"
    )
    with pytest.raises(BenchError, match="unknown strategy 'nope'"):
        build_grid(["nope"], [1], SAMPLING, discover())
    with pytest.raises(BenchError, match="at N=1: colour"):
        build_grid(["self_consistency?colour=red"], [1], SAMPLING, discover())
    with pytest.raises(BenchError, match="share a label"):
        build_grid(["self_consistency", "self_consistency"], [1], SAMPLING, discover())


def test_problem_seeds_are_stable_and_distinct():
    assert problem_seed(0, "gsm8k-test-0") == problem_seed(0, "gsm8k-test-0")
    seeds = {problem_seed(0, f"gsm8k-test-{i}") for i in range(1000)}
    assert len(seeds) == 1000
    assert problem_seed(1, "a") != problem_seed(0, "a")


def test_dataset_filters():
    math500 = load_dataset("math500")
    level1_algebra = select(math500, Selection(levels=(1,), subjects=("algebra",)))
    assert level1_algebra and all(p.level == 1 and p.subject == "Algebra" for p in level1_algebra)
    assert len(select(math500, Selection(limit=7))) == 7
    picked = select(load_dataset("aime24"), Selection(ids=("aime-2024-I-2", "aime-2024-I-1")))
    assert [p.id for p in picked] == ["aime-2024-I-1", "aime-2024-I-2"]  # dataset order
    assert [len(load_dataset(n)) for n in ("aime24", "aime25", "amc23", "math500", "gsm8k")] == [
        30, 30, 40, 500, 1319,
    ]  # fmt: skip


def test_filters_over_several_datasets():
    ids = load_problems(["aime24", "aime25"], Selection(ids=("aime-2025-I-3", "aime-2024-I-1")))
    assert [p.id for p in ids] == ["aime-2024-I-1", "aime-2025-I-3"]
    # levels filter MATH-500; GSM8K has no levels and passes through (then --limit)
    mixed = load_problems(["gsm8k", "math500"], Selection(levels=(1,), limit=3))
    assert [p.dataset for p in mixed] == ["gsm8k"] * 3 + ["math500"] * 3
    assert all(p.level == 1 for p in mixed if p.dataset == "math500")
    with pytest.raises(BenchError, match="unknown problem ids: aime-2024-X"):
        load_problems(["aime24", "aime25"], Selection(ids=("aime-2024-X",)))
    with pytest.raises(BenchError, match="MATH-500 only"):
        load_problems(["gsm8k"], Selection(levels=(3,)))
    with pytest.raises(BenchError, match="no problems"):
        load_problems(["math500"], Selection(subjects=("Astrology",)))


def test_prompt_keeps_latex_braces():
    (message,) = render_prompt("Answer in \\boxed{}: {problem}", PROBLEMS[0])
    assert message == {"role": "user", "content": "Answer in \\boxed{}: What is 9 + 9?"}


def test_progress_line_shows_accuracy_speed_and_eta():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(10, already_done=2, stream=stream, every_s=0, clock=lambda: now[0])
    now[0] = 4.0
    progress.advance(correct=True, tokens=200)
    now[0] = 8.0
    progress.advance(correct=False, tokens=200)
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("[#######")
    assert "4/10" in line and "acc 0.500" in line and "50 tok/s" in line
    assert "ETA 0:24" in line  # 4 s per job, 6 to go
    assert "(resumed 2)" in line


async def test_failures_in_a_row_stop_the_run(grader, tmp_path):
    engine = ScriptedEngine(_script())
    inner = InProcessBackend(Service(engine, Verifiers(grader), discover()))
    down = _FailingOn(inner, "What is", RuntimeError("connection refused"))
    runner = Runner(down, grader, tmp_path, progress_stream=io.StringIO(), max_failures_in_a_row=3)
    many = [p.model_copy(update={"id": f"{p.id}-{i}"}) for i in range(5) for p in PROBLEMS]
    with pytest.raises(GivingUp, match=r"3 jobs failed in a row.*connection refused"):
        await runner.run(many, _grid("self_consistency"))


def _server(*statuses: int):
    """A stand-in server answering the given statuses in turn (then 200s)."""
    seen: list[int] = []
    evidence = {"answer": "18", "candidates": [], "stop_reason": "completed"}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        status = statuses[len(seen)] if len(seen) < len(statuses) else 200
        seen.append(status)
        if status == 200:
            return httpx.Response(200, json={"ttscale": evidence})
        return httpx.Response(status, json={"error": {"message": f"status {status}"}})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://x"), seen


async def test_http_backend_retries_transient_errors_only():
    (setting,) = _grid("self_consistency", budgets=(1,))
    messages = render_prompt("{problem}", PROBLEMS[0])
    client, seen = _server(503, 429)
    backend = await HttpBackend.connect("http://x", client=client)
    backend.backoff_s = 0.0
    assert backend.model_name == "m"
    assert (await backend.solve(messages, setting, setting.params)).evidence["answer"] == "18"
    assert seen == [503, 429, 200]

    client, seen = _server(400)
    backend = await HttpBackend.connect("http://x", client=client)
    with pytest.raises(RequestRejected, match="status 400"):
        await backend.solve(messages, setting, setting.params)
    assert seen == [400]

    client, seen = _server(503, 503, 503, 503)
    backend = await HttpBackend.connect("http://x", client=client)
    backend.backoff_s = 0.0
    with pytest.raises(RuntimeError, match="HTTP 503: status 503"):
        await backend.solve(messages, setting, setting.params)
    assert len(seen) == 4  # the first try and three retries


def _flaky_transport(*failures: Exception, slow_first_s: float = 0.0):
    """Raises the given errors in turn (the first after a delay), then answers."""
    calls: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        calls.append(request.url.path)
        if len(calls) <= len(failures):
            if len(calls) == 1:
                await asyncio.sleep(slow_first_s)
            raise failures[len(calls) - 1]
        return httpx.Response(200, json={"ttscale": {"answer": "18"}})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://x"), calls


async def test_dropped_connections_are_retried_and_not_timed_but_timeouts_are_not_retried():
    (setting,) = _grid("self_consistency", budgets=(1,))
    messages = render_prompt("{problem}", PROBLEMS[0])
    client, calls = _flaky_transport(httpx.ConnectError("refused"), slow_first_s=0.5)
    backend = await HttpBackend.connect("http://x", client=client)
    backend.backoff_s = 0.0
    solved = await backend.solve(messages, setting, setting.params)
    assert len(calls) == 2
    assert solved.latency_s < 0.4  # the answering attempt only, not the failed one

    client, calls = _flaky_transport(httpx.ReadTimeout("no answer"))
    backend = await HttpBackend.connect("http://x", client=client)
    with pytest.raises(httpx.ReadTimeout):
        await backend.solve(messages, setting, setting.params)
    assert len(calls) == 1


async def test_http_backend_reports_an_unusable_server():
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "invalid API key"}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(refuse), base_url="http://x")
    with pytest.raises(BenchError, match="answered 401: invalid API key"):
        await HttpBackend.connect("http://x", client=client)


async def test_a_problem_too_long_for_the_context_fails_alone(grader, tmp_path):
    engine = ScriptedEngine(_script(), max_model_len=50)  # the short prompt and 40 tokens fit
    long = Problem(dataset="toy", id="long", problem="What is 9 + 9? " * 3, answer="18")
    short = Problem(dataset="toy", id="short", problem="9 + 9?", answer="18")
    runner = _runner(engine, grader, tmp_path, prompt_template="{problem}", max_failures_in_a_row=2)
    outcome = await runner.run([long, short], _grid("self_consistency"))
    assert outcome.done == 2  # two failures in a row, but not a broken engine
    assert outcome.failures[0].startswith("toy/long self_consistency@1: ")
    assert "does not fit: the prompt is 45 tokens" in outcome.failures[0]


async def test_http_context_overflow_is_a_problem_failure_not_a_rejection():
    def too_long(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        error = {"message": "the prompt is 5000 tokens", "code": "context_length_exceeded"}
        return httpx.Response(400, json={"error": error})

    client = httpx.AsyncClient(transport=httpx.MockTransport(too_long), base_url="http://x")
    backend = await HttpBackend.connect("http://x", client=client)
    (setting,) = _grid("self_consistency", budgets=(1,))
    with pytest.raises(ProblemTooLong, match="5000 tokens"):
        await backend.solve(render_prompt("{problem}", PROBLEMS[0]), setting, setting.params)


async def test_scores_json_cannot_carry_are_dropped(grader):
    candidate = {
        "answer": "18",
        "tokens": 0,
        "finish_reason": "abort",
        "scores": {"mean_logprob": float("-inf"), "judge": 0.5, "judge_steps": [0.5, math.nan]},
    }
    correct, (sample,) = await grade(grader, "18", "18", [candidate])
    assert correct and sample.correct
    assert sample.scores == {"judge": 0.5}


def test_a_line_cut_inside_a_character_is_a_torn_line(tmp_path):
    writer = RecordWriter(tmp_path)
    writer.write(record("p1", "self_consistency", 1, True))
    writer.close()
    whole = record("p2", "self_consistency", 1, True, [trace("π", 0, True)])
    data = whole.model_dump_json().encode()
    cut = data[: data.index("π".encode()) + 1]  # half of the two-byte character
    with (tmp_path / RECORDS).open("ab") as out:
        out.write(cut)
    assert [r.problem_id for r in read_records(tmp_path)] == ["p1"]


async def test_resuming_a_label_with_other_parameters_is_refused(grader, tmp_path):
    engine = ScriptedEngine(_script())
    await _runner(engine, grader, tmp_path).run(PROBLEMS, _grid("sc=self_consistency"))
    changed = _grid("sc=self_consistency?adaptive=true")
    with pytest.raises(BenchError, match="'sc@1' was recorded here with other parameters"):
        await _runner(engine, grader, tmp_path).run(PROBLEMS, changed)


async def test_one_setting_that_always_fails_stops_the_run(grader, tmp_path):
    engine = ScriptedEngine(_script())
    inner = InProcessBackend(Service(engine, Verifiers(grader), discover()))

    class BrokenJudge:
        model_name, kind = inner.model_name, inner.kind

        async def solve(self, messages, setting, params):
            if setting.strategy == "best_of_n":
                raise RuntimeError("judge crashed")
            return await inner.solve(messages, setting, params)

    runner = Runner(
        BrokenJudge(), grader, tmp_path, progress_stream=io.StringIO(), max_failures_in_a_row=3
    )
    many = [p.model_copy(update={"id": f"{p.id}-{i}"}) for i in range(5) for p in PROBLEMS]
    grid = _grid("self_consistency", "best_of_n", budgets=(1,))
    with pytest.raises(GivingUp, match="judge crashed"):
        await runner.run(many, grid)
    assert {r.setting for r in read_records(tmp_path)} == {"self_consistency@1"}


async def test_in_process_runs_obey_the_server_limits(grader, tmp_path):
    engine = ScriptedEngine(_script())
    backend = InProcessBackend(
        Service(engine, Verifiers(grader), discover(), ServiceLimits(max_n=2))
    )
    runner = Runner(backend, grader, tmp_path, progress_stream=io.StringIO())
    with pytest.raises(RequestRejected, match="n=4 exceeds this server's limit of 2"):
        await runner.run(PROBLEMS, _grid("self_consistency", budgets=(4,)))
    assert engine.calls == []


def test_a_model_below_the_working_directory_is_recorded_by_its_relative_path(
    tmp_path, monkeypatch
):
    """Records committed with a project name `models/NAME`, not the maker's machine."""
    from argparse import Namespace

    from ttscale.benchmarks.cli import _model_source

    monkeypatch.chdir(tmp_path)
    assert _model_source(Namespace(url=None, model="models/m")) == "models/m"
    assert _model_source(Namespace(url=None, model="/elsewhere/m")) == "/elsewhere/m"
    assert _model_source(Namespace(url="http://h:8000/", model=None)) == "http://h:8000"
    assert _model_source(Namespace(url=None, model=None)) == "embedded default"


def test_a_strategy_without_a_scale_knob_cannot_be_put_on_a_budget_grid():
    from ttscale.strategies.params import StrategyParams
    from ttscale.strategies.registry import Strategy

    class Fixed(StrategyParams):
        scale_knob = None

    async def once(ctx, params):
        raise AssertionError("never run")

    strategies = {"fixed": Strategy("fixed", Fixed, once)}
    with pytest.raises(BenchError, match="no scale knob"):
        build_grid(["fixed"], [1, 4], SamplingConfig(), strategies)


async def test_a_reasoning_models_records_keep_thinking_and_answer_tokens_apart(grader, tmp_path):
    """The compute axes of a reasoning model's run: thinking, answers, and their sum."""
    from ttscale.benchmarks.summary import summarize

    from .support.fakes import THOUGHT_CLOSES

    def thinks(prompt, spec, index):
        return Scripted(f"Let me add.{THOUGHT_CLOSES}So \\boxed{{18}}.")

    engine = ScriptedEngine(thinks, reasoning=True)
    await _runner(engine, grader, tmp_path).run(PROBLEMS[:1], _grid("self_consistency"))
    record = {r.key: r for r in read_records(tmp_path)}[("self_consistency@2", "toy", "easy")]
    assert record.correct
    assert [(s.reasoning_tokens, s.answer_source) for s in record.samples] == [
        (len("Let me add."), "answer")
    ] * 2
    assert record.reasoning_tokens == 2 * len("Let me add.") < record.generated_tokens
    row = next(r for r in summarize(read_records(tmp_path)) if r.n == 2)
    assert row.reasoning_tokens + row.answer_tokens == row.generated_tokens
    assert row.answer_tokens == 2 * len(f"{THOUGHT_CLOSES}So \\boxed{{18}}.")
