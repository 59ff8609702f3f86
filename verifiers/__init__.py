"""ttscale.verifiers: what an answer is and how good a solution is.

Answer extraction and math equivalence on a killable process pool (`extraction`,
`math_grader`), structured answers (JSON fields, regex matches, options, tool calls)
compared exactly (`structured`), the vote and score rules (`aggregate`), reward models
(`reward_model`, over `ttscale.engine.pooling`) and the LLM judge (`judge`). Strategies
call them through the small protocol in `protocol`. Imports only `ttscale.engine` below it.
"""
