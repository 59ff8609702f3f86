"""ttscale.strategies: policy — what to generate next, when to stop, how to aggregate.

`service.Service` is the service entry below HTTP: it validates a parsed request once,
opens its `budget.Budget`, runs the named strategy (one module each, found by
`registry.discover`; each declares its parameters as a `params.StrategyParams`) or plain
sampling, and returns choices, spending and evidence. Strategies sample through
`sampling.sample_until` and vote with `voting`. Imports only `ttscale.verifiers` and
`ttscale.engine` below it.
"""
