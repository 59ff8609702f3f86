"""Entry point of the `ttscale` console script (`python -m ttscale.cli` does the same)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ttscale.server import cli as server_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ttscale", description="Test-time-scaling inference server and benchmark."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    server_cli.add_commands(commands)
    commands.add_parser(
        "bench",
        add_help=False,
        help="benchmark strategies on AIME/AMC/MATH/GSM8K (`ttscale bench --help`)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["bench"]:
        from ttscale.benchmarks.cli import main as bench_main

        return bench_main(args[1:])
    return server_cli.run_command(build_parser().parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
