r"""`ttscale bench`: run strategies x budgets on AIME/AMC/MATH/GSM8K/MMLU, report, replay.

    ttscale bench run --dataset gsm8k --limit 20 --strategy self_consistency \
        --strategy inverse_entropy --n 1,4 --max-tokens 256
    ttscale bench run --dataset mmlu-elementary-math --limit 20 --n 1,4 --constrain
    ttscale bench report bench-out/gsm8k-smollm2-135m-instruct
    ttscale bench replay bench-out/gsm8k-smollm2-135m-instruct --k 1,2,4
    ttscale bench replay bench-out/gsm8k-smollm2-135m-instruct --adaptive
    ttscale bench view bench-out/gsm8k-smollm2-135m-instruct

A rerun of the same `run` command skips what is recorded; Ctrl-C keeps what is done.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from pydantic import ValidationError

from ttscale.engine.model_store import ModelStoreError
from ttscale.server.config import Settings
from ttscale.strategies.deepconf import DeepConfParams
from ttscale.strategies.errors import first_problem
from ttscale.strategies.registry import baseline, discover
from ttscale.strategies.self_consistency import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_STOPPING,
    STOP_RULES,
    StopRule,
)
from ttscale.verifiers.math_grader import MathGrader

from .adaptive_replay import Schedule, abstain_truncated, format_table, replay_schedules
from .answers import check_constrain, check_settings
from .backends import Backend, HttpBackend, InProcessBackend, RequestRejected
from .datasets import DATASETS, BenchError, Problem, Selection, load_problems
from .deepconf_replay import confidence_auroc, format_rows, full_trace_pool, replay_deepconf
from .grid import SamplingConfig, Setting, build_grid
from .records import Record, RunConfig, open_run, read_records
from .replay import default_pool, replay
from .report import build_report
from .runner import GivingUp, Runner, RunOutcome, run_prompt_template
from .summary import pooled_records
from .view import serve_view

EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
logger = logging.getLogger("ttscale.bench")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _ints(text: str) -> list[int]:
    values = [_positive(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        )
    return values


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(0.5 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in (0.5, 1), got {text!r}"
        )
    return values


def _stop_rules(text: str) -> list[StopRule]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values or any(v not in STOP_RULES for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated stop rules out of {', '.join(STOP_RULES)}; got {text!r}"
        )
    return [cast(StopRule, v) for v in values]


def _trace_k(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or not (value == -1 or 2 <= value <= 20):
        raise argparse.ArgumentTypeError("expected -1 (off) or a top-k from 2 to 20")
    return value


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", help="family the paired differences compare against")
    parser.add_argument("--pool", help="setting whose samples replay draws from")
    parser.add_argument("--k", type=_ints, help="replay subset sizes (default 1,2,4,... pool)")
    parser.add_argument("--draws", type=_positive, default=500, help="Monte Carlo draws per k")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


BENCH_MAX_N = 4096


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ttscale bench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the grid (resumes an existing --out)")
    run.add_argument(
        "--dataset", type=_names, default=["gsm8k"], help=f"comma-separated: {', '.join(DATASETS)}"
    )
    run.add_argument("--limit", type=_positive, help="first N problems of each dataset")
    run.add_argument("--ids", type=_names, default=[], help="comma-separated problem ids")
    run.add_argument("--level", type=_ints, default=[], help="MATH levels, e.g. 1,2")
    run.add_argument("--subject", action="append", default=[], help="MATH subject, repeatable")
    run.add_argument(
        "--strategy", action="append", dest="strategies",
        help="[LABEL=]NAME?key=value&... (repeatable; default self_consistency)",
    )  # fmt: skip
    run.add_argument("--n", type=_ints, default=[1, 4], help="budgets N, e.g. 1,2,4,8")
    run.add_argument("--max-tokens", type=_positive, default=512, help="per sample")
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--seed", type=int, default=0, help="base seed (per problem seeds)")
    run.add_argument(
        "--trace-logprobs", type=_trace_k, default=20,
        help="top-k logprobs recorded per sample, for entropy replay (-1: none)",
    )  # fmt: skip
    run.add_argument(
        "--prompt-template", type=Path,
        help="file with a {problem} placeholder (default: each dataset's own prompt)",
    )  # fmt: skip
    run.add_argument(
        "--constrain", action="store_true",
        help="multiple-choice datasets: the engine may write only an option's letter "
        "(structured outputs), so every sample's answer reads exactly",
    )  # fmt: skip
    run.add_argument("--url", help="benchmark a running ttscale server instead of in process")
    run.add_argument("--api-key", default=os.environ.get("TTSCALE_API_KEY"))
    run.add_argument("--model", help="model directory for in-process runs (default: embedded)")
    run.add_argument(
        "--prm", action="append", default=[],
        help="in-process runs: process reward model [NAME=]DIR_OR_URL, repeatable (name: prm)",
    )  # fmt: skip
    run.add_argument(
        "--orm", action="append", default=[],
        help="in-process runs: outcome reward model [NAME=]DIR_OR_URL, repeatable (name: orm)",
    )  # fmt: skip
    run.add_argument(
        "--reasoning-parser",
        help="in-process runs of a reasoning model: vLLM's reasoning parser (deepseek_r1, ...)",
    )
    run.add_argument("--max-model-len", type=int, default=4096)
    run.add_argument("--concurrency", type=_positive, default=4, help="problems in flight")
    run.add_argument("--out", type=Path, help="run directory (default bench-out/DATASETS-MODEL)")
    run.add_argument(
        "--dry-run", action="store_true", help="list the problems and settings, run nothing"
    )
    _report_options(run)

    report = commands.add_parser("report", help="rebuild report, CSVs and plots from records")
    report.add_argument("out", type=Path)
    _report_options(report)

    view = commands.add_parser("view", help="browse a run directory in a web browser")
    view.add_argument("out", type=Path, help="a run directory (`bench run --out`)")
    view.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    view.add_argument("--port", type=int, default=8002, help="port (default 8002)")

    replay_cmd = commands.add_parser("replay", help="print replay curves of recorded samples")
    replay_cmd.add_argument(
        "out", type=Path, nargs="+",
        help="run directories; several are pooled (each problem in one of them only)",
    )  # fmt: skip
    replay_cmd.add_argument("--pool", help="setting whose samples to draw from")
    replay_cmd.add_argument("--k", type=_ints, help="subset sizes")
    replay_cmd.add_argument("--draws", type=_positive, default=500)
    replay_cmd.add_argument(
        "--adaptive", action="store_true",
        help="replay adaptive self-consistency schedules against the pool's fixed N",
    )  # fmt: skip
    replay_cmd.add_argument(
        "--deepconf", action="store_true",
        help="replay DeepConf online and offline against self-consistency at the same tokens "
        "(pool: a deepconf?warmup=N setting, every trace full length)",
    )  # fmt: skip
    replay_cmd.add_argument(
        "--parallel", type=_ints, default=[2, 4, 8, 16], help="adaptive: samples in flight"
    )
    replay_cmd.add_argument(
        "--confidence", type=_fractions, default=[0.9, 0.95],
        help="adaptive: stopping thresholds on P(leader stays leader)",
    )  # fmt: skip
    replay_cmd.add_argument(
        "--min-samples", type=_ints, default=[DEFAULT_MIN_SAMPLES],
        help="adaptive: finished samples before the confidence rule may stop "
        f"(default {DEFAULT_MIN_SAMPLES})",
    )  # fmt: skip
    replay_cmd.add_argument(
        "--stopping", type=_stop_rules, default=[DEFAULT_STOPPING],
        help=f"adaptive: stop rules, out of {', '.join(STOP_RULES)} (default {DEFAULT_STOPPING})",
    )  # fmt: skip
    replay_cmd.add_argument(
        "--hold-back", action="store_true",
        help="adaptive: also replay each schedule with parallel > 1 holding back samples "
        "while the ones in flight could settle the vote (as the server does by default)",
    )  # fmt: skip
    replay_cmd.add_argument(
        "--abstain-truncated", action="store_true",
        help="adaptive: samples cut off at max_tokens vote for nothing (a what-if)",
    )  # fmt: skip
    return parser


async def _open_backend(args: argparse.Namespace) -> tuple[Backend, MathGrader, bool]:
    """The backend, and the grader (the in-process backend lends its own)."""
    if args.url:
        if args.prm or args.orm or args.reasoning_parser:
            raise BenchError(
                "--prm/--orm/--reasoning-parser are for in-process runs; a server has its own"
            )
        backend = await HttpBackend.connect(args.url, args.api_key)
        grader = MathGrader()
        await grader.warm_up()
        return backend, grader, True
    overrides = {
        "max_model_len": args.max_model_len,
        "prm": args.prm,
        "orm": args.orm,
        "max_n": BENCH_MAX_N,  # the grid is the user's own: no server-side cap on samples
        "reasoning_parser": args.reasoning_parser,
    }
    if args.model:
        overrides["model"] = args.model
    local = await InProcessBackend.open(Settings(**overrides))
    return local, local.grader, False


def check_report_options(args: argparse.Namespace, grid: Sequence[Setting]) -> None:
    """Catch report options that cannot work before hours of generation, not after."""
    labels = [s.label for s in grid]
    if args.pool is not None and args.pool not in labels:
        raise BenchError(f"--pool {args.pool!r} is not a setting of this run: {', '.join(labels)}")
    pool_n = next((s.n for s in grid if s.label == args.pool), max(s.n for s in grid))
    if args.k and max(args.k) > pool_n:
        raise BenchError(f"--k {max(args.k)} exceeds the replay pool's {pool_n} samples")
    families = {s.family for s in grid}
    if args.baseline is not None and args.baseline not in families:
        raise BenchError(
            f"--baseline {args.baseline!r} is not one of {', '.join(sorted(families))}"
        )


def _model_source(args: argparse.Namespace) -> str:
    """Where the model came from: two directories of one name are different models.
    Relative to the working directory when below it, so that records committed with a
    project say `models/NAME`, not a path of the machine that made them."""
    if args.url:
        return args.url.rstrip("/")
    if not args.model:
        return "embedded default"
    path = Path(args.model).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _default_out(datasets: Sequence[str], model: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-").lower()
    return Path("bench-out") / f"{'+'.join(datasets)}-{slug}"


def _plan(args: argparse.Namespace) -> tuple[list[Problem], SamplingConfig, list[Setting]]:
    """The problems, sampling and grid a run would use; errors before any model loads."""
    selection = Selection(args.limit, tuple(args.ids), tuple(args.level), tuple(args.subject))
    problems = load_problems(args.dataset, selection)
    formats = {p.dataset: p.answer_format for p in problems}
    if args.constrain:
        check_constrain(formats.values())
    sampling = SamplingConfig(
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        seed=args.seed,
        logprobs=None if args.trace_logprobs < 0 else args.trace_logprobs,
        constrain_choices=args.constrain,
    )
    strategies = discover()
    grid = build_grid(args.strategies or [baseline(strategies)], args.n, sampling, strategies)
    check_settings(grid, formats, strategies, constrain=args.constrain)
    check_report_options(args, grid)
    print(
        f"{len(problems)} problems x {len(grid)} settings: {', '.join(s.label for s in grid)}",
        file=sys.stderr,
    )
    return problems, sampling, grid


def _dry_run(args: argparse.Namespace) -> None:
    """Print the problems a run would solve (one `dataset/id` a line), load no model."""
    problems, _, _ = _plan(args)
    for problem in problems:
        print(f"{problem.dataset}/{problem.id}")


async def _run(args: argparse.Namespace, box: dict[str, Path]) -> RunOutcome:
    template = args.prompt_template.read_text() if args.prompt_template else None
    problems, sampling, grid = _plan(args)
    backend, grader, owns_grader = await _open_backend(args)
    try:
        out = args.out or _default_out(args.dataset, backend.model_name)
        box["out"] = out
        config = RunConfig(
            model=backend.model_name,
            model_source=_model_source(args),
            backend=backend.kind,
            dtype=backend.dtype,
            prompt_template=run_prompt_template(problems, template),
            sampling=sampling,
        )
        open_run(out, config)
        runner = Runner(
            backend, grader, out, prompt_template=template, constrain=args.constrain,
            base_seed=args.seed, concurrency=args.concurrency,
        )  # fmt: skip
        return await runner.run(problems, grid)
    finally:
        if owns_grader:
            grader.close()
        await backend.close()


def _report(args: argparse.Namespace, out: Path) -> None:
    files = build_report(
        out, baseline=args.baseline, pool=args.pool, ks=args.k, draws=args.draws,
        with_plots=not args.no_plots,
    )  # fmt: skip
    print(f"report: {files.report}", file=sys.stderr)
    print(f"summary: {files.summary}", file=sys.stderr)
    if files.replay:
        print(f"replay: {files.replay}", file=sys.stderr)
    for plot in files.plots:
        print(f"plot: {plot}", file=sys.stderr)
    print(files.summary.read_text(), end="")


def _replay(args: argparse.Namespace) -> None:
    records = pooled_records(args.out)
    if args.adaptive:
        _replay_adaptive(args, records)
        return
    if args.deepconf:
        _replay_deepconf(args, records)
        return
    points = replay(records, pool=args.pool, ks=args.k, draws=args.draws)
    print(f"pool: {points[0].pool} ({points[0].problems} problems)")
    for p in points:
        print(
            f"{p.dataset:10} {p.method:24} k={p.k:<3} {p.accuracy.format()}  "
            f"tokens {p.generated_tokens:.0f}"
        )


def _replay_adaptive(args: argparse.Namespace, records: Sequence[Record]) -> None:
    pool = args.pool or default_pool(records)
    schedules = [
        Schedule(p, c, min_samples=m, stopping=rule, hold_back=hold)
        for rule in args.stopping
        for m in args.min_samples
        for c in args.confidence
        for p in args.parallel
        for hold in ([False, True] if args.hold_back and p > 1 else [False])
    ]
    if args.abstain_truncated:
        records = abstain_truncated(records)
    results = replay_schedules(records, schedules, pool=pool, draws=min(args.draws, 200))
    print(f"pool: {pool} ({results[0].problems} problems, {results[0].n} samples each)")
    print(format_table(results))


def _replay_deepconf(args: argparse.Namespace, records: Sequence[Record]) -> None:
    pool = args.pool or full_trace_pool(records)
    variants = [
        DeepConfParams(variant="high"),
        DeepConfParams(variant="low"),
        DeepConfParams(variant="high", consensus=None),
        DeepConfParams(variant="low", consensus=None),
    ]
    rows = replay_deepconf(records, variants, pool=pool, draws=min(args.draws, 200))
    problems = sum(r.setting == pool for r in records)
    print(f"pool: {pool} ({problems} problems); tokens are generated tokens per problem")
    print(format_rows(rows))
    auroc, mixed = confidence_auroc(records, pool)
    print(
        f"trace confidence, right vs wrong traces of the same problem: AUROC {auroc:.3f} "
        f"({mixed} problems with both; 0.5 is chance)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    box: dict[str, Path] = {}
    try:
        if args.command == "report":
            _report(args, args.out)
            return 0
        if args.command == "replay":
            _replay(args)
            return 0
        if args.command == "view":
            serve_view(args.out, args.host, args.port)
            return 0
        if args.dry_run:
            _dry_run(args)
            return 0
        try:
            outcome = asyncio.run(_run(args, box))
        except (RequestRejected, GivingUp) as stopped:
            print(f"ttscale bench: error: {stopped}", file=sys.stderr)
            if "out" in box and read_records(box["out"]):
                _report(args, box["out"])  # what was done before the stop
            return EXIT_USAGE if isinstance(stopped, RequestRejected) else EXIT_FAILURES
        except KeyboardInterrupt:
            if "out" not in box:
                return EXIT_INTERRUPTED
            print(
                "\ninterrupted: finished problems are kept; rerun the same command to resume",
                file=sys.stderr,
            )
            _report(args, box["out"])
            return EXIT_INTERRUPTED
        _report(args, box["out"])
        if outcome.failures:
            print(f"{len(outcome.failures)} job(s) failed (rerun to retry):", file=sys.stderr)
            for failure in outcome.failures[:10]:
                print(f"  {failure}", file=sys.stderr)
            return EXIT_FAILURES
        return 0
    except (BenchError, ModelStoreError) as exc:
        print(f"ttscale bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        problem = first_problem(exc)
        print(f"ttscale bench: error: {problem.where}: {problem.message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
