"""ttscale.engine: the bottom layer, and the only code that talks to vLLM.

- `protocol.Engine` / `Generation`: token ids and a `types.SamplingSpec` in, samples
  (token ids, text, logprob/entropy stats, prompt and cache counts) out, abort at will;
- `local_vllm` (in-process `AsyncLLM`), `remote` (vLLM OpenAI servers, or vllm-router in
  front of several), `pooling` (reward models on vLLM's pooling runner, in process or
  remote);
- `factory.open_engine(EngineConfig)`, `lifecycle` (starting and stopping engines off the
  event loop), `model_store` (model directories, the embedded default), `parity` and
  `seed_repeat` (what `ttscale doctor` checks).

Imports nothing from the layers above (verifiers, strategies, server, benchmarks).
"""
