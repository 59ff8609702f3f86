"""ttscale.strategies: policy — what to generate next, when to stop, how to aggregate.

`run.Service` is the service entry below HTTP: it validates a parsed request once,
opens its `budget.Budget`, runs the named strategy (one module each: `best_of_n`,
`self_consistency`, `inverse_entropy`, `multi_temperature`, `step_search`, found by
`registry.discover`) or plain sampling, and returns choices, usage and evidence.
Strategies sample through `sampling.sample_until` and vote with `voting`. Imports only
`ttscale.verifiers` and `ttscale.engine` below it.
"""
