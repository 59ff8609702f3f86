"""The `ttscale` command: the top of the stack, above both the server and the benchmark.

It only dispatches: `ttscale bench ...` goes to `ttscale.benchmarks.cli`, everything else
(`serve`, `prepare-model`) to `ttscale.server.cli`. Keeping the dispatcher here means the
server never imports the benchmark, and every arrow between layers points down.
"""
