"""``atomthink annotate``: annotate a problems file through an OpenAI-compatible endpoint; ``atomthink
annotate-report``: the quality report of an output folder.

The endpoint, model and key come from ``--base-url``/``--model``/``--api-key`` or the settings
(``ATOMTHINK_ANNOTATE_BASE_URL``, ``ATOMTHINK_ANNOTATE_MODEL``, ``ATOMTHINK_ANNOTATE_API_KEY``); without them the
command refuses to run. It exits 0 with a JSON summary on stdout whatever the endpoint answers (every problem ends
as a record or a recorded rejection); 2 on a usage error (no endpoint, a bad input file, an output folder of
another configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from research.annotate.engine import MODES
    from research.annotate.problems import INPUT_FORMATS
    from research.annotate.prompts import PROMPT_STYLES

    p = subparsers.add_parser(
        "annotate", help="annotate problems with an LLM endpoint into AMATH-SFT / AMATH-PRM records"
    )
    p.add_argument("input", help="problems file (JSONL/JSON: sharegpt/LLaVA, MathVista, MathVerse, synthetic, plain)")
    p.add_argument("--out", required=True, help="output folder (append-only annotations.jsonl; resumable)")
    p.add_argument("--format", choices=INPUT_FORMATS, help="input format (default: detected from the first record)")
    p.add_argument("--image-root", help="folder image paths are relative to (default: the input file's folder)")
    p.add_argument("--limit", type=int, help="annotate the first N problems")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="dynamic",
        help="dynamic prompting, short-CoT atomization, or solve (an endpoint that reasons step by step itself)",
    )
    p.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default="generic",
        help="generic JSON prompts (default) or a checkpoint's own step preset (plain-text steps)",
    )
    p.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (or settings)")
    p.add_argument("--model", help="model name at the endpoint (or settings)")
    p.add_argument("--api-key", help="bearer token (or ATOMTHINK_ANNOTATE_API_KEY)")
    p.add_argument(
        "--structured",
        choices=("auto", "json_schema", "off"),
        default="auto",
        help="send response_format JSON schema (auto: drop it when the endpoint refuses it)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="problems annotated at once")
    p.add_argument("--rps", type=float, help="most HTTP requests per second (default: no limit)")
    p.add_argument("--max-retries", type=int, default=4, help="retries of one call on 429/5xx/timeouts")
    p.add_argument("--backoff", type=float, default=0.5, help="first retry back-off in seconds (doubles, jittered)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP call")
    p.add_argument("--max-steps", type=int, default=12, help="most nodes of a dynamic path")
    p.add_argument("--max-resamples", type=int, default=2, help="extra calls for a reply that cannot be used")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, help="tokens per call (default by mode)")
    p.add_argument("--seed", type=int, default=0, help="base of the per-call seeds")
    p.add_argument("--prm-preset", default="math-psa", help="step tag of prm.jsonl (atomthink.prm_format presets)")
    p.add_argument(
        "--extra-body", help="JSON object merged into every request (e.g. vLLM's top_k, this service's atomthink)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)

    r = subparsers.add_parser("annotate-report", help="quality report of an `atomthink annotate` output folder")
    r.add_argument("out", help="the output folder")
    r.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    r.set_defaults(func=report)


def _fail(message: str) -> int:
    print(f"atomthink annotate: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from atomthink.settings import Settings
    from research.annotate.batch import ResumeMismatch, check_run_file, read_log, run_batch, tally
    from research.annotate.client import ChatClient
    from research.annotate.engine import AnnotateConfig, record_id
    from research.annotate.export import export
    from research.annotate.problems import load_problems
    from research.annotate.report import quality_report, render_markdown

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would bury the progress bar
    settings = Settings()
    base_url = args.base_url or settings.annotate_base_url
    model = args.model or settings.annotate_model
    key = args.api_key or (settings.annotate_api_key.get_secret_value() if settings.annotate_api_key else None)
    if not base_url or not model:
        return _fail("no endpoint: pass --base-url and --model (or set ATOMTHINK_ANNOTATE_BASE_URL/_MODEL)")
    try:
        extra: dict[str, Any] = json.loads(args.extra_body) if args.extra_body else {}
        if not isinstance(extra, dict):
            raise ValueError("--extra-body must be a JSON object")
        config = AnnotateConfig(
            mode=args.mode,
            prompt_style=args.prompt_style,
            max_steps=args.max_steps,
            max_resamples=args.max_resamples,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            seed=args.seed,
        )
        problems = load_problems(args.input, args.format, image_root=args.image_root, limit=args.limit)
    except (OSError, ValueError, KeyError) as exc:
        return _fail(str(exc))
    out = Path(args.out)
    fingerprint = {
        "input": str(Path(args.input).resolve()),
        "model": model,
        "base_url": base_url,
        "prm_preset": args.prm_preset,
        **config.as_dict(),
    }
    try:
        check_run_file(out, fingerprint)
    except ResumeMismatch as exc:
        return _fail(str(exc))

    async def go() -> dict[str, Any]:
        async with ChatClient(
            base_url,
            model,
            api_key=key,
            timeout_s=args.timeout,
            max_retries=args.max_retries,
            backoff_s=args.backoff,
            requests_per_s=args.rps,
            structured=args.structured,
            extra_body=extra,
        ) as client:
            summary = await run_batch(
                problems, out, client, config, concurrency=args.concurrency, progress=not args.quiet
            )
            records = read_log(out / "annotations.jsonl")
            tally(records, summary)
            result = summary.as_dict(client)
        order = [record_id(p.id, config) for p in problems]
        result["written"] = export(records, out, order, args.prm_preset)
        quality = quality_report(records)
        (out / "report.json").write_text(json.dumps(quality, indent=2) + "\n")
        (out / "report.md").write_text(render_markdown(quality))
        result["out"] = str(out)
        return result

    print(json.dumps(asyncio.run(go()), indent=2))
    return 0


def report(args: argparse.Namespace) -> int:
    from research.annotate.batch import read_log
    from research.annotate.report import quality_report, render_markdown

    path = Path(args.out) / "annotations.jsonl"
    if not path.is_file():
        return _fail(f"{path}: no annotation log")
    quality = quality_report(read_log(path))
    print(json.dumps(quality, indent=2) if args.json else render_markdown(quality), end="" if not args.json else "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atomthink")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
