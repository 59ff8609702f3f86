"""ttscale.engine: the bottom layer, and the only code that talks to vLLM.

- `protocol.Engine` / `Generation`: token ids and a `types.SamplingSpec` in, samples
  (token ids, text, logprob/entropy stats, prompt and cache counts) out, abort at will;
- `local_vllm` (in-process `AsyncLLM`), `remote` (vLLM OpenAI servers), `pooling`
  (reward models on vLLM's pooling runner, in process or remote);
- `factory.open_engine(EngineConfig)`, `model_store` (model directories, the embedded
  default), `tiny_models` (random test models).

Imports nothing from the layers above (verifiers, strategies, server, benchmarks).
"""
