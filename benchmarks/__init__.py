"""ttscale.benchmarks: `ttscale bench` (datasets, strategy x budget grids, resumable
records, statistics, replay, reports). The top layer under the command: in-process runs
call the same service entry as the server (`ttscale.strategies.service.Service`, built by
`ttscale.server.wiring`). Measurement scripts are not here: they live in the
repository's `lab/`, which is not installed."""
