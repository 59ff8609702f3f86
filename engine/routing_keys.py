"""Routing keys that keep prompts sharing a prefix on one replica's prefix cache.

Behind vllm-router's `consistent_hash` policy, requests that carry the same session key
(`X-Session-ID`) land on the same vLLM replica. Without a key the router hashes a
token-id prompt by its *length*: unrelated prompts of equal length pile onto one
replica, and the continuations of one step search (each a little longer) scatter.

The key is derived here, from the prompt alone, so the engine protocol needs no new
argument and every strategy gets affinity without knowing about replicas:

- A prompt is cut into blocks of `BLOCK_TOKENS` token ids with chained digests, the way
  vLLM's prefix cache identifies blocks; a prompt's key is the digest of its last full
  block.
- A prompt is a *root* unless it extends a root seen recently: then it takes that root's
  key (the longest one it extends). So every sample of a self-consistency request (one
  prompt), every step of a step search or particle filter (prompt + steps so far), a
  sequential refinement that continues the conversation, or the next turn of a chat
  (the previous prompt + the answer) all carry one key, while different questions get
  different keys and consistent hashing spreads them.
- A root's key is a digest of its tokens, not of anything this process remembers, so
  two stateless fronts give the same question the same key. Only continuations use the
  memory, and a continuation is always produced by the front that ran its root.

Keys follow what the prefix cache can reuse: two prompts that share at least the root's
full blocks share that much KV cache too. The trade-off is load: one request's samples
run on one replica (the router spreads *requests*, not the samples of one), which is the
right call when replicas are busy, and costs latency on an idle cluster.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence

BLOCK_TOKENS = 16
"""Granularity of prefix matching (vLLM's default KV block size on a GPU)."""


def block_digests(token_ids: Sequence[int], block: int = BLOCK_TOKENS) -> list[bytes]:
    """Chained digests of each full block: digest i covers tokens [0, (i + 1) * block)."""
    digests: list[bytes] = []
    previous = b""
    for start in range(0, len(token_ids) - block + 1, block):
        chunk = array("q", token_ids[start : start + block]).tobytes()
        previous = hashlib.blake2b(previous + chunk, digest_size=12).digest()
        digests.append(previous)
    return digests


class PrefixKeys:
    """Routing key per prompt: the key of the longest recently seen root it extends.

    Bounded (least recently used roots are forgotten first); one per engine, never global.
    """

    def __init__(self, capacity: int = 8192, block: int = BLOCK_TOKENS) -> None:
        self._roots: OrderedDict[bytes, str] = OrderedDict()
        self._capacity = capacity
        self._block = block

    def key(self, prompt_ids: Sequence[int]) -> str:
        digests = block_digests(prompt_ids, self._block)
        for digest in reversed(digests):
            found = self._roots.get(digest)
            if found is not None:
                self._roots.move_to_end(digest)
                return found
        if not digests:  # shorter than one block: nothing to share, key by content
            return _hex(array("q", prompt_ids).tobytes())
        root = digests[-1]
        self._roots[root] = key = root.hex()
        if len(self._roots) > self._capacity:
            self._roots.popitem(last=False)
        return key

    def __len__(self) -> int:
        return len(self._roots)


def _hex(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()
