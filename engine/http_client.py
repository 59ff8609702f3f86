"""What the engine's HTTP adapters share: one client library (aiohttp), its error types
and how a request is authorised.

Both remote adapters (generation in `remote.py`, reward models in `pooling.py`) talk to
vLLM servers with aiohttp; it was chosen for the generation path, where every sample is
its own streamed request and the client's CPU per request matters
(lab/studies/http-client-cpu.md), and the reward path uses it too so that the engine
layer has one client, one set of errors to catch and one way to pass an API key.
"""

from __future__ import annotations

import aiohttp

HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What a request can raise when the server is unreachable, drops the connection or
stays silent past a timeout (aiohttp raises `TimeoutError` for the latter)."""

REPLY_ERRORS = (ValueError, KeyError, IndexError, TypeError)
"""What reading a reply can raise when the server is not the vLLM server expected: a body
that is not JSON (`json.JSONDecodeError` is a `ValueError`), or JSON without the fields
read from it."""


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The bearer header vLLM's `--api-key` expects, or none."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def unusable(server: str, exc: BaseException) -> str:
    """Why a server cannot be used: out of reach, or answering as no vLLM server does."""
    if isinstance(exc, HTTP_ERRORS):  # first: aiohttp's InvalidURL is a ValueError too
        return f"cannot reach {server}: {exc!r}"
    return f"{server} does not answer as a vLLM server: {exc!r}"
