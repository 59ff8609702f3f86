"""A stand-in for a vLLM OpenAI server that answers at once: the front's own cost, alone.

On two shared cores the added latency of one plain request through the front, measured
against a real vLLM, moves by several ms from run to run, because the engine's compute
dominates each request and competes with the front for the same cores. Against this
stand-in the model costs nothing, so what remains is the front's work (HTTP in,
validation, chat rendering, the streamed request to the engine, the response) and one
loopback hop; `concurrency --mode stand-in` times it, paired against the stand-in's own
chat route.

It speaks the part of vLLM's server the remote adapter uses, with the served model's
tokenizer doing what vLLM's would: `/v1/models`, `/v1/completions` (streamed: the
sample in one chunk, as a 16-token `stream_interval` chunk arrives; not streamed: the
one-token probes of the vocabulary bound, refused past the vocabulary as vLLM refuses
them), `/v1/chat/completions` (renders the template, as vLLM does, and answers),
`/tokenize`, `/detokenize`, `/health` and `/metrics`. Every sample is the same
`max_tokens` tokens of one word; nothing is computed from the prompt but its length.

    .venv/bin/python -m tests.support.stand_in_vllm --model DIR --port 8001
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ttscale.engine.local_tokenizer import load_tokenizer

WORD = " word"
STATE = web.AppKey("state", dict)


def build_app(model_dir: Path, served_name: str) -> web.Application:
    tokenizer = load_tokenizer(model_dir)
    word_id = tokenizer.encode(WORD, add_special_tokens=False)[0]
    app = web.Application()
    app[STATE] = {"tokenizer": tokenizer, "name": served_name, "word_id": word_id}
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/tokenize", _tokenize)
    app.router.add_post("/detokenize", _detokenize)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


async def _models(request: web.Request) -> web.Response:
    name = request.app[STATE]["name"]
    return web.json_response({"object": "list", "data": [{"id": name, "max_model_len": 2048}]})


async def _completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.json()
    prompt = body["prompt"]
    if any(not 0 <= t < len(state["tokenizer"]) for t in prompt):
        message = f"Token id {max(prompt)} is out of vocabulary"
        return web.json_response({"error": {"message": message}}, status=400)
    tokens = int(body.get("max_tokens") or 16)
    choice = {
        "index": 0,
        "text": WORD * tokens,
        "token_ids": [state["word_id"]] * tokens,
        "finish_reason": "length",
    }
    usage = {"prompt_tokens": len(prompt), "completion_tokens": tokens}
    if not body.get("stream"):
        return web.json_response({"choices": [choice], "usage": usage})
    events = [{"choices": [choice]}, {"choices": [], "usage": usage}]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in events:
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _chat(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    prompt = _render(state["tokenizer"], body["messages"], add_generation_prompt=True)
    tokens = int(body.get("max_tokens") or 16)
    message = {"role": "assistant", "content": WORD * tokens}
    return web.json_response({
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "model": state["name"],
        "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": tokens,
                  "total_tokens": len(prompt) + tokens},
    })  # fmt: skip


async def _tokenize(request: web.Request) -> web.Response:
    tokenizer = request.app[STATE]["tokenizer"]
    body = await request.json()
    if "messages" in body:
        generation = bool(body.get("add_generation_prompt", True))
        tokens = _render(tokenizer, body["messages"], add_generation_prompt=generation)
    else:
        special = bool(body.get("add_special_tokens", True))
        tokens = tokenizer.encode(body["prompt"], add_special_tokens=special)
    return web.json_response({"tokens": list(tokens), "count": len(tokens)})


async def _detokenize(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"prompt": request.app[STATE]["tokenizer"].decode(body["tokens"])})


async def _health(request: web.Request) -> web.Response:
    return web.Response()


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text="vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n")


def _render(tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool):
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False
    )
    return tokenizer.encode(text, add_special_tokens=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the served model's directory")
    parser.add_argument("--served-model-name", help="default: the directory's name")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build_app(args.model, args.served_model_name or args.model.name)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
