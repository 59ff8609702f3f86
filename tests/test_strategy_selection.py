"""Choosing a strategy per request: the model-name suffix grammar."""

from __future__ import annotations

import pytest

from ttscale.strategies.errors import InvalidRequest
from ttscale.strategies.strategy_choice import split_model_name


def test_plain_model_name_has_no_options():
    assert split_model_name("smollm2-135m-instruct") == ("smollm2-135m-instruct", None)


def test_suffix_names_strategy_params_and_budget():
    base, options = split_model_name(
        "smollm2:self_consistency?n=16&adaptive=true&sampling.max_tokens=128"
        "&budget.max_generated_tokens=2000&weighting=none"
    )
    assert base == "smollm2"
    assert options.strategy == "self_consistency"
    assert options.params == {
        "n": 16,
        "adaptive": True,
        "sampling": {"max_tokens": 128},
        "weighting": "none",
    }
    assert options.budget.max_generated_tokens == 2000


def test_suffix_values_may_be_json_lists():
    _, options = split_model_name("m:multi_temperature?temperatures=[0,0.5,1]")
    assert options.params == {"temperatures": [0, 0.5, 1]}


def test_suffix_without_parameters():
    _, options = split_model_name("m:best_of_n")
    assert options.strategy == "best_of_n" and options.params == {}


@pytest.mark.parametrize(
    "model",
    [":self_consistency", "m:", "m:sc?n", "m:sc?budget.max_samples=0", "m:sc?a=1&a.b=2"],
)
def test_malformed_suffixes_are_400s_naming_the_model(model):
    with pytest.raises(InvalidRequest) as caught:
        split_model_name(model)
    assert caught.value.param == "model"


def test_a_parameter_model_must_name_a_real_scale_knob():
    """What a benchmark's budget N sets is declared, and checked when the class is made."""
    from pydantic import Field

    from ttscale.strategies.params import StrategyParams

    with pytest.raises(TypeError, match="scale_knob names no field: 'n'"):

        class Knobless(StrategyParams):
            width: int = Field(4, ge=1)

    class Wide(StrategyParams):
        scale_knob = "width"
        width: int = Field(4, ge=1)

    class Fixed(StrategyParams):
        scale_knob = None

    assert Wide.scale_knob == "width" and Fixed.scale_knob is None
