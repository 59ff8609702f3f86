"""Structured answers (`answer`: json, regex, choice, tool_call): what each kind extracts,
how the strategies vote and report them (exact equality of canonical answers, never the
math grader), and the parameter errors, on the scripted engine with no model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from ttscale.strategies.base import Verifiers
from ttscale.strategies.best_of_n import BestOfNParams, best_of_n
from ttscale.strategies.deepconf import DeepConfParams, deepconf
from ttscale.strategies.errors import InvalidRequest
from ttscale.strategies.inverse_entropy import InverseEntropyParams, inverse_entropy
from ttscale.strategies.multi_temperature import MultiTemperatureParams, multi_temperature
from ttscale.strategies.registry import discover
from ttscale.strategies.self_consistency import SelfConsistencyParams, self_consistency
from ttscale.strategies.service import Service
from ttscale.verifiers.structured import AnswerFormat, canonical_json, exact_classes

from .support.fakes import Scripted, ScriptedEngine
from .test_service import choose, request
from .test_strategies_logic import SEEDED, FakeOutcomeVerifier, context


class NoMathGrader:
    """Stands in for the math grader where structured answers must never reach it."""

    tally = None

    def for_request(self, deadline_s: float) -> NoMathGrader:
        return self

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        raise AssertionError(f"structured answers went to the math grader: {answers}")

    def close(self) -> None:
        return None


def texts_engine(texts: Sequence[str]) -> ScriptedEngine:
    """Sample k (its seed, with sampling.seed=0) writes texts[k] (cycling)."""
    return ScriptedEngine(lambda prompt, spec, index: Scripted(texts[spec.seed % len(texts)]))


JSON = AnswerFormat(kind="json", path="answer")
FOURS = ['{"answer": 4, "why": "a"}', '{"why": "b", "answer": 4}', '{"answer": 5}']


# --- extraction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("answer", '{"answer": 4, "why": "a"}', "4"),
        ("answer", '{"answer": {"b": 1, "a": [1, "é"]}}', '{"a":[1,"é"],"b":1}'),
        ("answer", '{"answer": "4"}', '"4"'),  # a string is not the number
        ("answer", '{"answer": null}', "null"),  # present, and null
        ("result.items.1", '{"result": {"items": ["x", {"k": true}]}}', '{"k":true}'),
        ("result.items.0", '{"result": {"items": {"0": "key"}}}', '"key"'),
        ("", " [1, 2] \n", "[1,2]"),  # the whole value
        ("answer", '```json\n{"answer": 4}\n```', "4"),  # one fence around the whole text
        ("answer", '{"why": "no answer"}', None),
        ("result.items.2", '{"result": {"items": [1, 2]}}', None),
        ("answer.x", '{"answer": 4}', None),
        ("answer", "The answer is 4.", None),  # not JSON
        ("answer", '{"answer": 4} and more', None),
        ("answer", '{"answer": NaN}', None),  # not JSON either
        ("", "", None),
    ],
)
def test_json_answers_are_the_canonical_value_at_the_path(path, text, expected):
    assert AnswerFormat(kind="json", path=path).extract(text) == expected


def test_canonical_json_sorts_keys_and_drops_spaces():
    assert canonical_json({"b": [1, 2], "a": "é"}) == '{"a":"é","b":[1,2]}'
    assert canonical_json(4) != canonical_json(4.0)  # compared as written: 4 is not 4.0


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"Answer:\s*(\w+)", "Answer: a\nthen Answer:  bee \n", "bee"),  # the last match
        (r"\d+", "1 and 22", "22"),  # no group: the whole match
        (r"(?i)final: (.*)", "FINAL:  yes  ", "yes"),  # inline flags; stripped
        (r"Answer: (\w+)?", "Answer: x, Answer: ", None),  # the last match's group is unset
        (r"Answer: (.*)", "Answer:   ", None),  # blank
        (r"Answer: (\w+)", "nothing here", None),
    ],
)
def test_regex_answers_are_the_first_group_of_the_last_match(pattern, text, expected):
    assert AnswerFormat(kind="regex", pattern=pattern).extract(text) == expected


def test_a_pattern_that_backtracks_without_end_gives_no_answer_instead_of_hanging():
    stuck = AnswerFormat(kind="regex", pattern=r"(a|aa)+$")
    assert stuck.extract("a" * 60 + "!") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  B \n", "B"),  # the text is the option
        ("I'd say A... no, B.", "B"),  # else the last option found as a whole word
        ("Between New York and Boston: New York", "New York"),  # ending together: the longer
        ("York, not New York", "New York"),
        ("b", None),  # case-sensitive
        ("a cat, Boston", "Boston"),
        ("ABBA", None),  # whole words only
        ("", None),
    ],
)
def test_choice_answers_are_the_option_the_text_is_or_names_last(text, expected):
    options = ["A", "B", "New York", "York", "Boston"]
    assert AnswerFormat(kind="choice", options=options).extract(text) == expected


def test_tool_calls_compare_by_name_and_arguments_wherever_the_arguments_are_spelt():
    calls = AnswerFormat(kind="tool_call")
    expected = '{"arguments":{"city":"Oslo","days":2},"name":"weather"}'
    assert calls.extract('{"name": "weather", "arguments": {"days": 2, "city": "Oslo"}}') == (
        expected
    )
    as_text = (
        '{"id": "c1", "name": "weather", "arguments": "{\\"city\\": \\"Oslo\\", \\"days\\": 2}"}'
    )
    assert calls.extract(as_text) == expected  # arguments as JSON text; other keys ignored
    assert calls.extract('{"name": "now"}') == '{"arguments":{},"name":"now"}'
    for broken in ('{"name": "f", "arguments": "{oops"}', '{"arguments": {}}', "[1]", "f(x)"):
        assert calls.extract(broken) is None
    nested = AnswerFormat(kind="tool_call", path="function")
    openai_style = '{"type": "function", "function": {"name": "weather", "arguments": "{}"}}'
    assert nested.extract(openai_style) == '{"arguments":{},"name":"weather"}'


def test_boxed_is_the_default_and_reads_as_before():
    assert AnswerFormat().kind == "boxed" and AnswerFormat().by_math
    assert AnswerFormat().extract("So \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert AnswerFormat().extract("it is 12") == "12"
    assert AnswerFormat().extract("it is 12", numeric_fallback=False) is None
    assert SelfConsistencyParams().answer == AnswerFormat()


def test_exact_classes_number_answers_in_order_of_first_appearance():
    assert exact_classes(["5", None, "4", "5", "4 "]) == [0, None, 1, 0, 2]


@pytest.mark.parametrize(
    ("given", "field", "message"),
    [
        ({"kind": "regex", "pattern": "(unclosed"}, "pattern", "not a regular expression"),
        ({"kind": "regex"}, "pattern", "needs a non-empty pattern"),
        ({"kind": "choice", "options": []}, "options", "at least one option"),
        ({"kind": "choice"}, "options", "at least one option"),
        ({"kind": "choice", "options": ["A", " A"]}, "options", "distinct"),
        ({"kind": "choice", "options": ["A", " "]}, "options", "blank"),
        ({"kind": "xml"}, "kind", "Input should be"),
        ({"kind": "json", "pattern": "x"}, "pattern", "only kind 'regex'"),
        ({"kind": "boxed", "path": "answer"}, "path", "only kinds json and tool_call"),
        ({"kind": "json", "path": "a..b"}, "path", "empty part"),
        ({"kind": "json", "colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_a_wrong_answer_format_names_its_field(given, field, message):
    with pytest.raises(ValidationError) as caught:
        AnswerFormat(**given)
    problem = caught.value.errors()[0]
    assert problem["loc"] == (field,) and message in problem["msg"]


# --- the strategies -----------------------------------------------------------------


async def test_self_consistency_votes_by_a_json_field_without_the_math_grader():
    params = SelfConsistencyParams(n=3, sampling=SEEDED, answer=JSON)
    result = await self_consistency(await context(texts_engine(FOURS), NoMathGrader()), params)
    assert result.answer == "4" and result.chosen in (0, 1)
    assert result.votes == {"4": 2.0, "5": 1.0}
    assert [c.answer for c in result.candidates] == ["4", "4", "5"]
    assert [c.answer_class for c in result.candidates] == [0, 0, 1]
    assert "grading" not in result.details  # nothing went to the grader's workers


async def test_structured_answers_group_by_exact_equality_not_math_equivalence(grader):
    halves = ['{"answer": 0.5}', '{"answer": "1/2"}', '{"answer": "1/2"}', '{"answer": 0.5}']
    engine = texts_engine([*halves, '{"answer": 0.50}'])
    params = SelfConsistencyParams(n=5, sampling=SEEDED, answer=JSON)
    result = await self_consistency(await context(engine, grader), params)
    assert result.votes == {"0.5": 3.0, '"1/2"': 2.0}  # 0.50 parses to 0.5; "1/2" is text
    boxed = texts_engine(["\\boxed{0.5}", "\\boxed{1/2}"])
    result = await self_consistency(
        await context(boxed, grader), SelfConsistencyParams(n=2, sampling=SEEDED)
    )
    assert result.votes == {"0.5": 2.0}  # the default still groups by math equivalence


async def test_adaptive_self_consistency_stops_on_structured_votes():
    engine = texts_engine(['{"answer": 4}'])
    params = SelfConsistencyParams(n=5, sampling=SEEDED, answer=JSON, adaptive=True, parallel=1)
    result = await self_consistency(await context(engine, NoMathGrader()), params)
    assert result.stop_reason == "early_stop" and result.usage.samples_started == 3
    assert result.votes == {"4": 3.0} and "cannot be overtaken" in result.explanation


async def test_regex_answers_vote_in_inverse_entropy():
    texts = ["Work.\nAnswer: 12 apples", "Answer: 7\nNo, Answer: 12", "Answer: 9"]
    pattern = AnswerFormat(kind="regex", pattern=r"Answer:\s*(\d+)")
    params = InverseEntropyParams(n=3, sampling=SEEDED, answer=pattern)
    result = await inverse_entropy(await context(texts_engine(texts), NoMathGrader()), params)
    assert result.answer == "12"
    assert [c.answer for c in result.candidates] == ["12", "12", "9"]
    assert set(result.votes) == {"12", "9"}


async def test_choice_answers_vote_in_multi_temperature():
    by_seed = ["B", "I'd say A... no, B.", "C"]

    def script(prompt, spec, index):
        text = "Answer: B" if spec.temperature == 0 else by_seed[spec.seed % 3]
        return Scripted(text)

    params = MultiTemperatureParams(
        temperatures=[0.0, 0.8],
        samples_per_temperature=3,
        first_round=3,
        sampling=SEEDED,
        answer=AnswerFormat(kind="choice", options=["A", "B", "C"]),
    )
    result = await multi_temperature(await context(ScriptedEngine(script), NoMathGrader()), params)
    assert result.answer == "B"
    assert result.details["per_temperature"]["0.8"]["winner_answer"] == "B"
    assert sorted(c.answer for c in result.candidates) == ["B", "B", "B", "C"]


async def test_deepconf_votes_over_json_answers():
    params = DeepConfParams(n=3, window=4, consensus=None, sampling=SEEDED, answer=JSON)
    result = await deepconf(await context(texts_engine(FOURS), NoMathGrader()), params)
    assert result.answer == "4" and result.votes == {"4": 2.0, "5": 1.0}


async def test_best_of_n_picks_by_its_verifier_and_reports_the_structured_answer():
    judge = FakeOutcomeVerifier(lambda text: 0.9 if "5" in text else 0.1)
    params = BestOfNParams(n=3, sampling=SEEDED, verifier="judge", answer=JSON)
    ctx = await context(texts_engine(FOURS), NoMathGrader(), outcome={"judge": judge})
    result = await best_of_n(ctx, params)
    assert result.chosen == 2 and result.answer == "5"  # the verifier's pick, not the vote
    assert [c.answer for c in result.candidates] == ["4", "4", "5"]
    assert [c.scores["judge"] for c in result.candidates] == [0.1, 0.1, 0.9]


# --- through the service ------------------------------------------------------------


def structured_service(texts: Sequence[str]) -> Service:
    judge = FakeOutcomeVerifier(lambda text: 0.5)
    verifiers = Verifiers(NoMathGrader(), outcome={"judge": judge})  # type: ignore[arg-type]
    return Service(texts_engine(texts), verifiers, discover())


async def test_the_evidence_and_the_sample_events_show_the_canonical_answers():
    events: list[dict[str, Any]] = []

    async def progress(event: dict[str, Any]) -> None:
        events.append(event)

    answer = {"kind": "json", "path": "answer"}
    choice = choose("self_consistency", n=3, answer=answer, sampling={"seed": 0})
    result = await structured_service(FOURS).complete(request(choice=choice), progress)
    evidence = result.evidence
    assert evidence["answer"] == "4" and evidence["votes"] == {"4": 2.0, "5": 1.0}
    assert [c["answer"] for c in evidence["candidates"]] == ["4", "4", "5"]
    assert evidence["params"]["answer"] == {**answer, "pattern": None, "options": None}
    samples = sorted((e["index"], e["answer"]) for e in events if e["event"] == "sample")
    assert samples == [(0, "4"), (1, "4"), (2, "5")]


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"answer": {"kind": "regex", "pattern": "(("}}, "choice.params.answer.pattern", "regular"),
        ({"answer": {"kind": "choice", "options": []}}, "choice.params.answer.options", "option"),
        ({"answer": {"kind": "yaml"}}, "choice.params.answer.kind", "'json'"),
        ({"answer": {"kind": "json", "options": ["A"]}}, "choice.params.answer.options", "only"),
        (
            {"answer": {"kind": "json"}, "answer_from_thinking": True},
            "choice.params.answer_from_thinking",
            "boxed answers only",
        ),
    ],
)
async def test_a_wrong_answer_parameter_is_refused_before_any_sample(params, param, words):
    svc = structured_service(FOURS)
    with pytest.raises(InvalidRequest) as caught:
        await svc.prepare(request(choice=choose("self_consistency", **params)))
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}: ") and words in caught.value.message
    assert svc.engine.calls == []


@pytest.mark.parametrize("strategy", sorted(discover()))
def test_every_strategy_takes_the_answer_parameter(strategy):
    model = discover()[strategy].params_model
    assert model.model_fields["answer"].default == AnswerFormat()
    regex = {"kind": "regex", "pattern": r"(\d+)"}
    assert model.model_validate({"answer": regex, **_required(strategy)}).answer.kind == "regex"


def _required(strategy: str) -> dict[str, Any]:
    """The parameters a strategy cannot do without (the step-level ones need a verifier)."""
    model = discover()[strategy].params_model
    return {name: "prm" for name, field in model.model_fields.items() if field.is_required()}
