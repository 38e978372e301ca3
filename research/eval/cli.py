"""``atomthink eval``: solve a data set through the service and report accuracy, latency and cost.

    atomthink eval --data data/heldout/problems.jsonl --mode quick --limit 100
    atomthink eval --data data/heldout --mode slow --strategy best_of_n --candidates 1,2,4,8
    atomthink eval --suite paper --data data/heldout --data mathvista=data/MathVista/testmini.json --limit 200
    atomthink eval --data data/heldout --mode slow --strategy majority,best_of_n --candidates 4,8,16 --paths runs/paths

Writes ``results.jsonl`` (one line per solved item; a rerun resumes from it), ``summary.md``, ``summary.json`` and
the PNG plots into ``--out``, and prints accuracy, mean latency and mean generated tokens per run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import shlex
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

from atomthink.settings import Settings
from research.eval.datasets import FORMATS, DatasetFormat, EvalItem, detect_format, load_items, resolve_data_file
from research.eval.judge import LlmJudge
from research.eval.paths import DEFAULT_PATHS, SavedPathsClient
from research.eval.report import console_table, write_report
from research.eval.runner import (
    HttpSolveClient,
    RunOptions,
    SolveClient,
    embedded_client,
    read_results,
    result_key,
    run_items,
)
from research.eval.suites import (
    AGGREGATIONS,
    MODES,
    STRATEGIES,
    SUITES,
    FieldValue,
    Plan,
    SuiteName,
    custom_plan,
    suite_plan,
)
from service.schemas import AggregationName, Mode, Strategy

log = logging.getLogger(__name__)

DEFAULT_OUT = "runs/eval"
SETTINGS_FLAGS = ("eval_judge_base_url", "eval_judge_model")


def _choices(allowed: Sequence[str]) -> Any:
    def parse(value: str) -> list[str]:
        names = [v.strip() for v in value.split(",") if v.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(allowed)}; got {value!r}")
        return names

    return parse


def _ints(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, e.g. 1,2,4,8; got {value!r}") from None
    if not numbers or any(n < 1 or n > 64 for n in numbers):
        raise argparse.ArgumentTypeError("candidate counts must be 1 to 64")
    return numbers


def _field(value: str) -> tuple[str, FieldValue]:
    """``FIELD=VALUE``, the value read as JSON when it parses (numbers, true/false), else as a string."""
    name, sep, raw = value.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE; got {value!r}")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw
    if not isinstance(parsed, int | float | bool | str):
        raise argparse.ArgumentTypeError(f"{name}: expected a number, true/false or a word; got {raw!r}")
    return name.strip(), parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``atomthink eval`` flag (shared by the subcommand and ``python -m research.eval.cli``)."""
    from atomthink.cli_args import add_model_flags

    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[FORMAT=]PATH",
        help="a data file or folder, repeatable; FORMAT is synthetic, mathvista or mathverse (default: detected)",
    )
    data.add_argument("--image-root", help="folder image paths are relative to (default: the data file's folder)")
    data.add_argument("--limit", type=int, help="first N items of each data file")
    runs = parser.add_argument_group("what to run")
    runs.add_argument(
        "--suite",
        choices=SUITES,
        help="a named set of runs (paper: modes, strategies, scaling, capabilities); without it, every combination "
        "of the flags below",
    )
    runs.add_argument("--mode", type=_choices(MODES), default=["quick"], help="comma list of direct,cot,quick,slow")
    runs.add_argument("--strategy", type=_choices(STRATEGIES), help="slow: comma list of " + ",".join(STRATEGIES))
    runs.add_argument("--aggregation", type=_choices(AGGREGATIONS), help="slow: comma list of min,last,mean,prod")
    runs.add_argument("--candidates", type=_ints, help="slow: candidate counts to sweep, e.g. 1,2,4,8")
    runs.add_argument("--beam-width", type=int, help="slow beam: beams kept per depth (default 2)")
    runs.add_argument(
        "--adaptive",
        action="store_true",
        help="slow majority/weighted_majority: also run each adaptively (candidates as the ceiling) at every "
        "candidate count above 4",
    )
    runs.add_argument(
        "--prune-fraction",
        type=float,
        help="slow best_of_n: also run each with this pruning fraction (every 2 steps) at every candidate count "
        "above 4",
    )
    runs.add_argument(
        "--set",
        dest="fields",
        action="append",
        type=_field,
        default=[],
        metavar="FIELD=VALUE",
        help="slow: a strategy field for every strategy that takes it (repeatable), e.g. --set eta=10",
    )
    runs.add_argument("--max-steps", type=int, default=20, help="most atomic steps per path (default 20)")
    runs.add_argument("--temperature", type=float, help="sampling temperature (default: the server's)")
    runs.add_argument("--deadline-ms", type=int, help="per-solve deadline; the best answer so far is graded")
    runs.add_argument("--seed", type=int, default=0, help="base seed; each item gets its own from it (default 0)")
    runs.add_argument("--capabilities", action="store_true", help="add the atomic-step capability analysis")
    service = parser.add_argument_group("service")
    service.add_argument("--url", help="a running gateway (e.g. http://127.0.0.1:8000); default: embedded")
    service.add_argument("--concurrency", type=int, default=4, help="solves in flight at once (default 4)")
    service.add_argument(
        "--paths",
        metavar="DIR",
        help="embedded: path-level strategies read one set of saved paths per problem (recorded into DIR on first "
        "use), so every N and selection rule sees the same samples; step-level strategies sample afresh",
    )
    service.add_argument(
        "--paths-n", type=int, default=DEFAULT_PATHS, help=f"paths saved per problem (default {DEFAULT_PATHS})"
    )
    add_model_flags(parser)
    judge = parser.add_argument_group("LLM judge (off by default)")
    judge.add_argument("--judge", action="store_true", help="ask an OpenAI-compatible judge when the rules say wrong")
    judge.add_argument(
        "--judge-url", dest="eval_judge_base_url", help="judge base URL (or ATOMTHINK_EVAL_JUDGE_BASE_URL)"
    )
    judge.add_argument("--judge-model", dest="eval_judge_model", help="judge model name")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    output.add_argument("--fresh", action="store_true", help="discard earlier results in --out instead of resuming")
    output.add_argument("--report-only", action="store_true", help="rewrite the report from results.jsonl")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``atomthink eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate modes and strategies on synthetic, MathVista or MathVerse data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def load_data(specs: Sequence[str], image_root: str | None, limit: int | None) -> list[EvalItem]:
    """Items of every ``--data`` spec, each labelled by its format (numbered when a format repeats)."""
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for spec in specs:
        fmt, _, path = spec.partition("=") if spec.split("=", 1)[0] in FORMATS else ("", "", spec)
        kind = cast(DatasetFormat, fmt) if fmt else detect_format(resolve_data_file(path))
        seen[kind] = seen.get(kind, 0) + 1
        label = kind if seen[kind] == 1 else f"{kind}{seen[kind]}"
        items += load_items(path, kind, label=label, image_root=image_root, limit=limit)
    return items


def make_plan(args: argparse.Namespace) -> Plan:
    if args.suite:
        plan = suite_plan(
            cast(SuiteName, args.suite),
            args.candidates or [1, 2, 4, 8],
            aggregation=cast(AggregationName, args.aggregation[0]) if args.aggregation else None,
            beam_width=args.beam_width,
        )
    else:
        plan = custom_plan(
            cast(list[Mode], args.mode),
            cast(list[Strategy], args.strategy or ["beam"]),
            cast(list[AggregationName | None], args.aggregation or [None]),
            cast(list[int | None], args.candidates or [None]),
            args.beam_width,
            adaptive=args.adaptive,
            prune_fraction=args.prune_fraction,
            fields=dict(args.fields),
        )
    plan.capabilities = plan.capabilities or args.capabilities
    return plan


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace, settings: Settings) -> AsyncIterator[SolveClient]:
    if args.url:
        if args.paths:
            raise SystemExit("--paths needs the embedded service (no --url): it answers jobs, not requests")
        client = HttpSolveClient(args.url, timeout_s=settings.request_timeout_s + 60)
        try:
            yield client
        finally:
            await client.aclose()
    else:
        async with embedded_client(settings) as embedded:
            yield SavedPathsClient(embedded, Path(args.paths), args.paths_n) if args.paths else embedded


async def evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Run (or, with ``--report-only``, only report) and print the per-run figures."""
    items = load_data(args.data, args.image_root, args.limit)
    if not items:
        raise SystemExit("no items to evaluate")
    plan = make_plan(args)
    out = Path(args.out)
    results = out / "results.jsonl"
    if args.fresh and results.exists():
        results.unlink()
    options = RunOptions(
        seed=args.seed,
        max_steps=args.max_steps,
        temperature=args.temperature,
        deadline_ms=args.deadline_ms,
        concurrency=args.concurrency,
        progress=not args.no_progress,
        capabilities=plan.capabilities,
    )
    if args.report_only:
        wanted = {(c.key, i.dataset, i.id) for c in plan.runs for i in items}
        records = [r for r in read_results(results) if result_key(r) in wanted]
    else:
        judge = LlmJudge.from_settings(settings) if args.judge else None
        try:
            async with _client(args, settings) as client:
                records = await run_items(client, plan.runs, items, results, options, judge)
        finally:
            if judge is not None:
                await judge.aclose()
    report = write_report(out, plan, items, records, header=_header(args, settings, items))
    print(console_table(report.summaries[c.key] for c in plan.runs))
    print("wrote " + ", ".join(str(p) for p in [results, *report.files]))
    return 0


def _header(args: argparse.Namespace, settings: Settings, items: Sequence[EvalItem]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.dataset] = counts.get(item.dataset, 0) + 1
    service = (
        f"gateway {args.url}" if args.url else f"embedded; policy `{settings.policy_model}`, PRM `{settings.prm_model}`"
    )
    return (
        f"\n- command: `atomthink eval {shlex.join(_argv_tail())}`\n"
        f"- service: {service}\n"
        f"- items: {', '.join(f'{k} {v}' for k, v in counts.items())}; seed {args.seed}; max steps {args.max_steps}\n"
        f"- written: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
    )


def _argv_tail() -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index("eval") + 1 :] if "eval" in argv else argv


def run(args: argparse.Namespace) -> int:
    """Entry point of the subcommand."""
    from atomthink.cli_args import MODEL_FLAGS, settings_from_args

    settings = settings_from_args(args, (*MODEL_FLAGS, *SETTINGS_FLAGS))
    return asyncio.run(evaluate(args, settings))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="atomthink eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
