"""ttscale.server: HTTP (OpenAI-compatible), settings, the `serve` command, wiring.

`config.Settings` -> `wiring` (the composition root: engine, verifiers, strategies ->
`ttscale.strategies.service.Service`) -> `app` (lifecycle and routes) -> `api.completions`
(parse, call the service entry, map its errors, format JSON or SSE).
"""
