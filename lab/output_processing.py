"""What vLLM's own output processing costs per generated token in the front process.

With the engine in process, vLLM's `AsyncLLM` does per engine step, in the process that
also serves ttscale's HTTP: it decodes the step's `EngineCoreOutputs` from the engine
core (msgpack), and its `OutputProcessor` detokenises each new token incrementally,
turns top-k logprobs into `Logprob` objects (decoding every candidate token), builds the
`RequestOutput`s and hands them to each request's collector. That cost is vLLM's, not
ttscale's, but it shares ttscale's core: this script times it on synthetic steps, with
the served model's real tokenizer (vLLM's own `get_tokenizer`) and the instant engine's
token sequences, so it can be set beside `lab.front_ceiling`'s figures.

R requests advance one token per step for T steps (as a decode batch does); each case's
steps are built first, then `decode` (msgpack) and `process_outputs` are timed with the
process's CPU time, and each request's collector is drained once per step (DELTA: what
a reader of every token takes) or once at the end (FINAL_ONLY).

    .venv/bin/python -m lab.output_processing --requests 64 --tokens 256 --reps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from lab.instant_material import Material, trace_index
from lab.script_setup import model_to_measure, prepare_measurement

CASES = {
    "final only, no logprobs": (None, "FINAL_ONLY"),
    "deltas, no logprobs": (None, "DELTA"),
    "final only, top-20 logprobs": (20, "FINAL_ONLY"),
    "deltas, top-20 logprobs": (20, "DELTA"),
}


def _steps(
    material: Material, requests: int, tokens: int, k: int | None
) -> tuple[list[list[int]], list[Any]]:
    """Each request's token ids, and per step the engine core's outputs for all."""
    from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, FinishReason
    from vllm.v1.outputs import LogprobsLists

    plans = [
        material.plan(trace_index(f"r{i}", material.traces), tokens + 64) for i in range(requests)
    ]
    ids = [plan.token_ids[:tokens] for plan in plans]
    steps = []
    for step in range(tokens):
        outputs = []
        for i, plan in enumerate(plans):
            logprobs = None
            if k is not None:
                top = material.position(plan.token_ids[step], plan.levels[step], k)
                entries = [top[0], *top]  # the sampled token, then the top k by rank
                logprobs = LogprobsLists(
                    np.array([[t for t, _, _ in entries]], dtype=np.int32),
                    np.array([[lp for _, lp, _ in entries]], dtype=np.float32),
                    np.array([1], dtype=np.int32),
                )
            last = step == tokens - 1
            outputs.append(
                EngineCoreOutput(
                    request_id=f"r{i}",
                    new_token_ids=[ids[i][step]],
                    new_logprobs=logprobs,
                    finish_reason=FinishReason.LENGTH if last else None,
                )
            )
        steps.append(EngineCoreOutputs(outputs=outputs))
    return ids, steps


def time_case(
    tokenizer: Any, material: Material, requests: int, tokens: int, k: int | None, kind: str
) -> dict[str, float]:
    """CPU µs per generated token of decoding the steps and of processing them."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine import EngineCoreOutputs, EngineCoreRequest
    from vllm.v1.engine.output_processor import OutputProcessor, RequestOutputCollector
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    output_kind = RequestOutputKind[kind]
    _, steps = _steps(material, requests, tokens, k)
    encoded = [MsgpackEncoder().encode(step) for step in steps]
    decoder = MsgpackDecoder(EngineCoreOutputs)
    processor = OutputProcessor(tokenizer, log_stats=False)
    collectors = []
    prompt = tokenizer.encode("A farmer picks 60 apples and sells 48. How many are left?")
    for i in range(requests):
        params = SamplingParams(max_tokens=tokens, logprobs=k, output_kind=output_kind)
        request = EngineCoreRequest(
            request_id=f"r{i}", prompt_token_ids=prompt, mm_features=None,
            sampling_params=params, pooling_params=None, arrival_time=time.time(),
            lora_request=None, cache_salt=None, data_parallel_rank=None,
            external_req_id=f"r{i}",
        )  # fmt: skip
        collector = RequestOutputCollector(output_kind, f"r{i}")
        processor.add_request(request, None, queue=collector)
        collectors.append(collector)
    decode_s = process_s = 0.0
    drain_each_step = output_kind == RequestOutputKind.DELTA
    for frames in encoded:
        started = time.process_time()
        step = decoder.decode(frames)
        decoded = time.process_time()
        processor.process_outputs(step.outputs, time.monotonic(), None)
        if drain_each_step:
            for collector in collectors:
                collector.get_nowait()
        process_s += time.process_time() - decoded
        decode_s += decoded - started
    finals = [collector.get_nowait() for collector in collectors]
    generated = sum(len(f.outputs[0].token_ids) for f in finals if f is not None)
    if not drain_each_step:
        assert generated == requests * tokens, generated
    produced = requests * tokens
    return {"decode_us": 1e6 * decode_s / produced, "process_us": 1e6 * process_s / produced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prepare_measurement()
    from vllm.tokenizers import get_tokenizer

    model, name = model_to_measure(args.model)
    tokenizer = get_tokenizer(str(model))
    material = Material(tokenizer)
    rounds: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    for _ in range(args.reps):  # cases interleaved, so that noise falls on all
        for case, (k, kind) in CASES.items():
            rounds[case].append(time_case(tokenizer, material, args.requests, args.tokens, k, kind))
    results: dict[str, Any] = {"model": name, "requests": args.requests, "tokens": args.tokens}
    for case, figures in rounds.items():
        total = [f["decode_us"] + f["process_us"] for f in figures]
        results[case] = {
            "us_per_token_min": round(min(total), 2),
            "us_per_token_median": round(statistics.median(total), 2),
            "decode_us_median": round(statistics.median(f["decode_us"] for f in figures), 2),
            "process_us_median": round(statistics.median(f["process_us"] for f in figures), 2),
        }
    text = json.dumps(results, indent=2)
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
