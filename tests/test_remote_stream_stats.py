"""The remote adapter's reading of vLLM's stream: events parsed alike whatever the JSON
reader, and per-token entropies and confidences as the per-position functions give them,
whether reduced as the chunks arrive (under a confidence watch) or when the sample ends."""

from __future__ import annotations

import json
import math

import pytest

from ttscale.engine.confidence import LOW_CONFIDENCE, topk_confidence
from ttscale.engine.entropy import topk_entropy
from ttscale.engine.remote import _apply_chunk, _Partial, _to_sample, parse_event
from ttscale.engine.types import ConfidenceStop, SamplingSpec


def _position(token: int, spread: float, k: int, extra: bool) -> dict[str, float]:
    """A top-k position as vLLM writes it with return_tokens_as_token_ids; `extra`: the
    sampled token ranks below k and comes first, as a (k + 1)-th entry."""
    entries = {f"token_id:{token + 999}": -spread * (k + 7)} if extra else {}
    entries.update({f"token_id:{token + r}": -spread * (r + 1) for r in range(k)})
    return entries


def _chunk(start: int, count: int, k: int, finish: str | None = None) -> dict:
    positions = [_position(start + i, 0.2 + 0.3 * ((start + i) % 5), k, i % 3 == 0)
                 for i in range(count)]  # fmt: skip
    return {
        "choices": [{
            "index": 0, "text": "x" * count, "token_ids": list(range(start, start + count)),
            "finish_reason": finish, "stop_reason": None,
            "logprobs": {"token_logprobs": [next(iter(p.values())) for p in positions],
                         "top_logprobs": positions, "tokens": [], "text_offset": []},
        }]
    }  # fmt: skip


def _expected(chunks: list[dict], k: int) -> tuple[list[float], list[float]]:
    rows = [
        sorted(p.values(), reverse=True)[:k]
        for c in chunks
        for p in c["choices"][0]["logprobs"]["top_logprobs"]
    ]
    return [topk_entropy(r) for r in rows], [topk_confidence(r) for r in rows]


def test_events_read_as_json_reads_them():
    event = _chunk(0, 16, 20, "stop")
    payload = json.dumps(event, separators=(",", ":")).encode()
    assert parse_event(payload) == json.loads(payload)
    odd = b'{"value": NaN, "big": 123456789012345678901234567890}'
    parsed = parse_event(odd)  # orjson refuses both: read as json reads them
    assert math.isnan(parsed["value"]) and parsed["big"] == 123456789012345678901234567890


@pytest.mark.parametrize("k", [5, 20])
def test_stats_reduced_at_the_end_match_the_per_position_functions(k):
    spec = SamplingSpec(max_tokens=40, logprobs=k)
    chunks = [_chunk(0, 1, k), _chunk(1, 16, k), _chunk(17, 16, k), _chunk(33, 7, k, "length")]
    partial = _Partial()
    for chunk in chunks:
        _apply_chunk(chunk, partial, spec, ())
    sample = _to_sample(0, partial, aborted=False)
    entropies, confidences = _expected(chunks, k)
    assert sample.num_tokens == 40 and sample.finish_reason == "length"
    assert sample.token_entropies == pytest.approx(entropies, rel=1e-12)
    assert sample.token_confidences == pytest.approx(confidences, rel=1e-12)


def test_top_zero_gives_zero_entropies_and_confidences():
    spec = SamplingSpec(max_tokens=4, logprobs=0)
    partial = _Partial()
    _apply_chunk(_chunk(0, 4, 1, "length"), partial, spec, ())
    sample = _to_sample(0, partial, aborted=False)
    assert sample.token_entropies == [0.0] * 4
    assert sample.token_confidences == [0.0] * 4


def test_a_watched_sample_stops_on_the_confidences_it_read():
    k, window = 5, 4
    chunks = [_chunk(i, 1, k) for i in range(12)]
    _, confidences = _expected(chunks, k)
    lows = [sum(confidences[e - window : e]) / window for e in range(window, 13)]
    threshold = sorted(lows)[len(lows) // 2]  # some window falls below, not the first
    stop = ConfidenceStop(window=window, threshold=threshold)
    spec = SamplingSpec(max_tokens=12, logprobs=k, confidence_stop=stop)
    partial = _Partial()
    read = 0
    for chunk in chunks:
        _apply_chunk(chunk, partial, spec, ())
        read += 1
        if partial.low_confidence:
            break
    assert 0 < read < 12
    sample = _to_sample(0, partial, aborted=True)
    assert sample.stop_reason == LOW_CONFIDENCE
    assert sample.token_confidences == confidences[:read]
    assert sample.token_entropies == pytest.approx(_expected(chunks[:read], k)[0], rel=1e-12)
