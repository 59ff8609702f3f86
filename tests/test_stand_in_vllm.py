"""The stand-in vLLM server of `concurrency --mode stand-in` speaks what the remote
adapter asks of vLLM, so that the front measured against it does its deployed work:
chat rendered locally after the probe check, the vocabulary bound, a streamed sample."""

from __future__ import annotations

import logging
from pathlib import Path

from ttscale.engine.local_tokenizer import load_tokenizer
from ttscale.engine.remote import RemoteVLLMEngine
from ttscale.engine.types import SamplingSpec

from .support.servers import serve_app
from .support.stand_in_vllm import build_app


async def test_the_remote_adapter_works_against_the_stand_in(tiny_model_path: Path, caplog):
    async with serve_app(build_app(tiny_model_path, "tiny")) as url:
        engine = await RemoteVLLMEngine.connect([url], model_path=str(tiny_model_path))
        try:
            caplog.set_level(logging.DEBUG, logger="ttscale.engine.remote")
            caplog.clear()
            prompt = await engine.render_chat([{"role": "user", "content": "Hi"}])
            # its /tokenize renders as the tokenizer does, so chat is rendered locally
            assert "/tokenize" not in caplog.text
            vocabulary = len(load_tokenizer(tiny_model_path))
            assert engine.info.max_token_id == vocabulary - 1
            result = await engine.generate(prompt, SamplingSpec(max_tokens=16))
            sample = result.samples[0]
            assert len(sample.token_ids) == 16
            assert sample.text == " word" * 16
            assert sample.finish_reason == "length"
            await engine.check_health()
        finally:
            await engine.close()
