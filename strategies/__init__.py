"""Decoding strategies (best-of-N, self-consistency, entropy voting, multi-temperature,
step-level search). Each is plain async code over the engine protocol in
`server.engine.protocol`; they land with their own issue.
"""
