"""A model's generation config recommends sampling values (Qwen2.5: temperature 0.7,
top_k 20, ...). vLLM's server applies them to the fields a request leaves unset; so does
ttscale: in process from vLLM's reading of the config, remotely by leaving unset fields
out of the request so that the server applies them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import vllm.sampling_params  # noqa: F401  (at collection: importing vLLM runs `file` once)

from ttscale.engine.local_vllm import _sampling_defaults, sampling_params
from ttscale.engine.remote import _completion_body
from ttscale.engine.types import SamplingSpec

RECOMMENDED = {"temperature": 0.6, "top_k": 4, "top_p": 0.9, "repetition_penalty": 1.3}


@pytest.fixture(scope="module")
def model_with_defaults(tiny_model_path: Path, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("recommends") / "model"
    shutil.copytree(tiny_model_path, target)
    config = json.loads((target / "generation_config.json").read_text())
    (target / "generation_config.json").write_text(
        json.dumps({**config, **RECOMMENDED, "max_new_tokens": 77})
    )
    return target


def test_the_defaults_are_read_as_vllm_reads_them(model_with_defaults):
    from vllm.config import ModelConfig

    diff = ModelConfig(model=str(model_with_defaults)).get_diff_sampling_param()
    defaults = dict(_sampling_defaults(diff))
    assert defaults == RECOMMENDED  # not max_tokens: the server's own length policy


def test_unset_fields_take_the_defaults_in_process_and_set_ones_win():
    defaults = tuple(RECOMMENDED.items())
    params = sampling_params(SamplingSpec(temperature=1.0, max_tokens=9), 0, defaults)
    assert params.temperature == 1.0  # set by the client
    assert (params.top_k, params.top_p, params.repetition_penalty) == (4, 0.9, 1.3)
    neutral = sampling_params(SamplingSpec(max_tokens=9), 0)
    assert (neutral.top_k, neutral.temperature) == (0, 1.0)  # no defaults: vLLM's own


def test_a_remote_request_leaves_unset_fields_to_the_server():
    body = _completion_body("m", [1, 2], SamplingSpec(top_k=0, max_tokens=9), 0)
    assert body["top_k"] == 0  # set, even to "all": the server must not override it
    assert body["max_tokens"] == 9
    assert not {"temperature", "top_p", "repetition_penalty", "min_p"} & set(body)
    strategy_block = SamplingSpec.model_validate(SamplingSpec().model_dump())
    assert {"temperature", "top_p", "top_k"} <= set(_completion_body("m", [1], strategy_block, 0))
