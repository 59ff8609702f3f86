"""ttscale.benchmarks: `ttscale bench` (datasets, strategy x budget grids, resumable
records, statistics, replay, reports) and measurement scripts. The top layer under the
command: in-process runs call the same service entry as the server
(`ttscale.strategies.service.Service`, built by `ttscale.server.wiring`)."""
