"""A stand-in vLLM server that streams as fast as the front reads: the remote front's
own cost per token, alone.

It speaks the part of vLLM's OpenAI server the remote adapter and the reward models
use, in vLLM's own wire format: every SSE event of `/v1/completions` is serialised by
vLLM's own response classes (`CompletionStreamResponse`, `CompletionLogProbs`) as vLLM's
server serialises them (`model_dump_json(exclude_unset=True)`), with vLLM's chunking
under `stream_interval` (the first token alone, then every `stream_interval` tokens, the
rest with the finish reason), the prompt's ids in the first event (`return_token_ids`),
tokens as `token_id:N` (`return_tokens_as_token_ids`), top-k logprobs, stop strings,
then the usage event and `[DONE]`. The samples are those of the in-process instant
engine (`instant_material`). Each sample's events are serialised once and cached, so
the server's own work per request is a few copies; the whole stream is written at once
and goes as fast as the front reads it (a front that closes the stream aborts it).

Beside generation: `/v1/models`, the one-token probes of the vocabulary bound (refused
past the vocabulary as vLLM refuses them), `/tokenize`, `/detokenize`, `/health`,
`/metrics`, and `/pooling` for reward models (`--prm URL`, `--orm URL` of a front): an
outcome row per solution, a process row per `<extra_0>` step tag, scores that vary by
solution, at once.

    .venv/bin/python -m lab.instant_vllm --port 8001   # the embedded model's tokenizer
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from aiohttp import web

from lab.instant_material import Material, Plan, trace_index
from ttscale.engine.local_tokenizer import load_tokenizer

STATE = web.AppKey("state", dict)
ID_MARK = "cmpl-instant-0000000000000000"
PROMPT_MARK = [-7777]
STEP_TAG = "<extra_0>"


class Streams:
    """vLLM's SSE events of each sample, serialised once per (trace, length, stop
    strings, logprobs, interval, token form)."""

    def __init__(self, material: Material, model: str) -> None:
        from vllm.entrypoints.openai.completion.protocol import (
            CompletionLogProbs,
            CompletionResponseStreamChoice,
            CompletionStreamResponse,
        )

        self._material = material
        self._model = model
        self._created = int(time.time())
        self._classes = CompletionStreamResponse, CompletionResponseStreamChoice, CompletionLogProbs
        self._cache: dict[tuple[Any, ...], tuple[bytes, int]] = {}

    def events(self, body: dict[str, Any], request_key: str) -> tuple[bytes, int]:
        """The whole stream of one request but its usage event (prompt ids and id still
        marked), and its generated tokens."""
        key_source = request_key if body.get("seed") is None else f"seed-{body['seed']}"
        trace = trace_index(key_source, self._material.traces)
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        key = (
            trace,
            int(body.get("max_tokens") or 16),
            stop,
            body.get("logprobs"),
            int(body.get("stream_interval") or 1),
            bool(body.get("return_tokens_as_token_ids")),
            bool(body.get("include_stop_str_in_output")),
        )
        cached = self._cache.get(key)
        if cached is None:
            plan = self._material.plan(trace, key[1], stop)
            cached = self._cache[key] = (self._serialise(plan, *key[3:]), len(plan.token_ids))
        return cached

    def _serialise(
        self, plan: Plan, logprobs: int | None, interval: int, as_ids: bool, keep_stop: bool
    ) -> bytes:
        response, choice, _ = self._classes
        last = len(plan.token_ids)
        bounds = [0, 1, *range(1 + interval, last, interval), last] if last else [0, 0]
        bounds = sorted(set(bounds))
        events = []
        for number, (start, end) in enumerate(itertools.pairwise(bounds)):
            finished = end == last
            text = "".join(plan.pieces[start:end])
            if finished and plan.stop_reason and not keep_stop:
                text = text.removesuffix(plan.stop_reason)
            fields: dict[str, Any] = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": plan.finish_reason if finished else None,
                "stop_reason": plan.stop_reason if finished else None,
                "token_ids": plan.token_ids[start:end],
            }
            if logprobs is not None:
                fields["logprobs"] = self._logprobs(plan, start, end, logprobs, as_ids)
            if number == 0:
                fields["prompt_token_ids"] = PROMPT_MARK
            chunk = response(
                id=ID_MARK, object="text_completion", created=self._created, model=self._model,
                choices=[choice(**fields)],
            )  # fmt: skip
            events.append(f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n")
        return "".join(events).encode()

    def _logprobs(self, plan: Plan, start: int, end: int, k: int, as_ids: bool) -> Any:
        """vLLM's `_create_completion_logprobs` for these positions: the sampled token and
        the top k (k + 1 entries where the sampled token ranks below k)."""
        material = self._material

        def name(token_id: int) -> str:
            return f"token_id:{token_id}" if as_ids else material.piece(token_id)

        tokens, values, tops, offsets = [], [], [], []
        offset = len("".join(plan.pieces[:start]))
        for i in range(start, end):
            entries = material.position(plan.token_ids[i], plan.levels[i], k)
            tokens.append(name(plan.token_ids[i]))
            values.append(max(entries[0][1], -9999.0))
            tops.append({name(t): max(lp, -9999.0) for t, lp, _ in entries})
            offsets.append(offset)
            offset += len(tokens[-1])
        return self._classes[2](
            text_offset=offsets, token_logprobs=values, tokens=tokens, top_logprobs=tops
        )

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """vLLM's last event when `include_usage` is set (with prompt-token details)."""
        event = {
            "id": ID_MARK, "object": "text_completion", "created": self._created,
            "model": self._model, "choices": [],
            "usage": {"prompt_tokens": prompt_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "completion_tokens": completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": 0}},
        }  # fmt: skip
        return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def build_app(
    model_dir: Path, served_name: str, material: Material | None = None
) -> web.Application:
    material = material or Material(load_tokenizer(model_dir))
    app = web.Application(client_max_size=64 * 2**20)
    app[STATE] = {
        "material": material,
        "tokenizer": material.tokenizer,
        "name": served_name,
        "streams": Streams(material, served_name),
        "served": [0],
    }
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/tokenize", _tokenize)
    app.router.add_post("/detokenize", _detokenize)
    app.router.add_post("/pooling", _pooling)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


async def _models(request: web.Request) -> web.Response:
    name = request.app[STATE]["name"]
    card = {"id": name, "object": "model", "owned_by": "vllm", "max_model_len": 8192}
    return web.json_response({"object": "list", "data": [card]})


async def _completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.json()
    prompt = body["prompt"]
    vocabulary = len(state["tokenizer"])
    if any(not 0 <= t < vocabulary for t in prompt):
        message = f"Token id {max(prompt)} is out of vocabulary"
        return web.json_response({"error": {"message": message, "code": 400}}, status=400)
    if not body.get("stream"):  # the vocabulary probes, and anything else whole
        choice = {"index": 0, "text": " word", "token_ids": [0], "finish_reason": "length"}
        usage = {"prompt_tokens": len(prompt), "completion_tokens": 1}
        return web.json_response({"choices": [choice], "usage": usage})
    request_id = f"cmpl-{uuid.uuid4().hex[:16]}"
    events, tokens = state["streams"].events(body, body.get("request_id") or request_id)
    payload = events.replace(ID_MARK.encode(), request_id.encode(), -1)
    compact = (",", ":")
    payload = payload.replace(
        json.dumps(PROMPT_MARK, separators=compact).encode(),
        json.dumps(prompt, separators=compact).encode(),
        1,
    )
    payload += (
        state["streams"].usage(len(prompt), tokens).replace(ID_MARK.encode(), request_id.encode())
    )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        await response.write(payload + b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):  # the front closed it: an abort
        pass
    state["served"][0] += tokens
    return response


async def _tokenize(request: web.Request) -> web.Response:
    tokenizer = request.app[STATE]["tokenizer"]
    body = await request.json()
    if "messages" in body:
        text = tokenizer.apply_chat_template(
            body["messages"],
            add_generation_prompt=bool(body.get("add_generation_prompt", True)),
            tokenize=False,
        )
        tokens = tokenizer.encode(text, add_special_tokens=bool(body.get("add_special_tokens")))
    else:
        special = bool(body.get("add_special_tokens", True))
        tokens = tokenizer.encode(body["prompt"], add_special_tokens=special)
    return web.json_response({"tokens": list(tokens), "count": len(tokens), "max_model_len": 8192})


async def _detokenize(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"prompt": request.app[STATE]["tokenizer"].decode(body["tokens"])})


async def _pooling(request: web.Request) -> web.Response:
    """A reward model's logits at once: [0, x] rows, x from the solution's ids."""
    body = await request.json()
    ids = body["input"]
    if body.get("task") == "classify":
        rows: Any = _row(ids)
    else:
        text = request.app[STATE]["tokenizer"].decode(ids)
        steps = text.split(STEP_TAG)[:-1]
        rows, seen = [], ""
        for step in steps:
            seen += step
            rows.append(_row(seen))
    return web.json_response({"data": [{"index": 0, "object": "pooling", "data": rows}]})


def _row(source: Any) -> list[float]:
    """Logits (label 0, label 1) whose softmax gives a score between 0.5 and 0.98."""
    spread = zlib.crc32(repr(source).encode()) % 1000 / 1000
    return [0.0, 4.0 * spread]


async def _health(request: web.Request) -> web.Response:
    return web.Response()


async def _metrics(request: web.Request) -> web.Response:
    served = request.app[STATE]["served"][0]
    lines = [
        "vllm:num_requests_running 0",
        "vllm:num_requests_waiting 0",
        f"vllm:generation_tokens_total {served}",
    ]
    return web.Response(text="\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="the served model's directory (default: embedded SmolLM2)")
    parser.add_argument("--served-model-name", help="default: the model's name")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from lab.script_setup import model_to_measure

    model, name = model_to_measure(args.model)
    app = build_app(Path(model), args.served_model_name or name)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
