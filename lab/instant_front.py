"""The ttscale server over the in-process instant engine, as its own process.

The app is built as `ttscale serve` builds it (`create_app` with the same settings and
uvicorn configuration), with the engine opener swapped for one that lends an
`InstantEngine` (`lab.instant_engine`): everything from the HTTP server down to the
adapter's logprob reductions is the product's code. Reward models are named as for
`ttscale serve` (`--prm`, `--orm`: a URL of `lab.instant_vllm`, whose pooling stand-in
answers at once).

    .venv/bin/python -m lab.instant_front --port 8100 --max-n 64
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from lab.instant_engine import instant_engine
from lab.script_setup import model_to_measure
from ttscale.engine.protocol import Engine
from ttscale.server.app import create_app
from ttscale.server.cli import uvicorn_config
from ttscale.server.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: embedded SmolLM2)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-n", type=int, default=64)
    parser.add_argument("--prm", action="append", default=[], help="[NAME=]URL")
    parser.add_argument("--orm", action="append", default=[], help="[NAME=]URL")
    args = parser.parse_args()
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, name = model_to_measure(args.model)
    engine = instant_engine(Path(model), name)

    async def lend(_: Settings) -> Engine:
        return engine

    settings = Settings(
        model=model,
        served_model_name=name,
        port=args.port,
        max_n=args.max_n,
        prm=args.prm,
        orm=args.orm,
        log_level="warning",
    )
    app = create_app(settings, open_engine_fn=lend)
    uvicorn.Server(uvicorn_config(app, settings)).run()  # as `ttscale serve` serves it


if __name__ == "__main__":
    main()
