"""Fields of vLLM's requests that this server does not serve as vLLM does, and why."""

from __future__ import annotations

NOT_SERVED: dict[str, str] = {
    **dict.fromkeys(
        ("media_io_kwargs", "mm_processor_kwargs", "mm_payload", "return_mm_kwargs"),
        "multimodal inputs are not served here (text models only)",
    ),
    "prompt_embeds": "prompts are text or token ids here, not embeddings",
    **dict.fromkeys(
        ("kv_transfer_params", "ec_transfer_params"),
        "disaggregated prefill is configured on the vLLM servers behind ttscale, not per request",
    ),
    "use_beam_search": "beam search is not served; see the step_search strategy",
    "length_penalty": "a beam search parameter; beam search is not served",
    "chat_template": "a request's own chat template is refused, as vLLM's server refuses "
    "it without --trust-request-chat-template",
    "vllm_xargs": "custom logits processors are not configured here",
    "watermarking": "no watermarking is configured here",
    "suffix": "suffix is only supported for models with FIM completion rendering, as vLLM's "
    "server says of every model but DeepSeek-V4's renderer; none is served here",
    "routed_experts_prompt_start": "not served here (mixture-of-experts routing traces)",
}
"""vLLM request fields that have no meaning on this server, with the reason a 400 gives."""

NOT_YET_SERVED = frozenset(
    {
        "logprob_token_ids",
        "return_tokens_as_token_ids",
    }
)
"""vLLM request fields that would make sense here but are not served yet: a 400
"unsupported parameter" until they are (the parity test holds the list to vLLM's)."""
