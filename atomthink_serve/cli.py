"""``atomthink``: serve, gateway, worker, data, train, eval. Flags override settings."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from atomthink.cli_args import MODEL_FLAGS, add_model_flags, settings_from_args

if TYPE_CHECKING:
    from service.app import RuntimeFactory


def _queue_overrides(args: argparse.Namespace) -> None:
    """``--redis URL`` selects the Redis queue."""
    if getattr(args, "redis", None):
        args.queue, args.redis_url = "redis", args.redis


QUEUE_FLAGS = ("queue", "redis_url", "key_prefix")


def _serve(args: argparse.Namespace) -> None:
    from service.app import create_app
    from service.server import serve

    _queue_overrides(args)
    settings = settings_from_args(args, ("host", "port", *MODEL_FLAGS, *QUEUE_FLAGS))
    if args.command == "gateway" and settings.queue != "redis":
        raise SystemExit("atomthink gateway needs the Redis queue: pass --redis URL or set ATOMTHINK_QUEUE=redis")
    app = create_app(gateway_factory() if args.command == "gateway" else embedded_factory(), settings)
    serve(app, settings, log_level=args.log_level.lower())


def gateway_factory() -> RuntimeFactory:
    """The gateway without workers, its first-prompt check built from the checkpoints' tokenizers."""
    from atomthink.context import FirstPromptCheck
    from service.runtime import gateway_runtime

    return functools.partial(gateway_runtime, limits=FirstPromptCheck.from_settings)


def embedded_factory() -> RuntimeFactory:
    from atomthink_serve.embedded import embedded_runtime

    return embedded_runtime


def _worker(args: argparse.Namespace) -> None:
    import asyncio

    from workers.main import run_worker

    _queue_overrides(args)
    prefix = "policy" if args.role == "policy" else "prm"
    args.__dict__[f"{prefix}_batch_size"], args.__dict__[f"{prefix}_max_wait_ms"] = args.batch_size, args.max_wait_ms
    names = (*MODEL_FLAGS, *QUEUE_FLAGS, "metrics_port", f"{prefix}_batch_size", f"{prefix}_max_wait_ms")
    asyncio.run(run_worker(args.role, settings_from_args(args, names)))


def add_queue_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", metavar="URL", help="use the Redis queue at URL (e.g. redis://127.0.0.1:6379/0)")
    parser.add_argument("--key-prefix", dest="key_prefix", help="prefix of every Redis key (default: atomthink)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atomthink", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="gateway with in-process policy and PRM workers (memory or --redis)")
    gateway = commands.add_parser("gateway", help="gateway only; workers are separate processes on --redis")
    for parser_ in (serve, gateway):
        parser_.add_argument("--host")
        parser_.add_argument("--port", type=int)
        add_model_flags(parser_)
        add_queue_flags(parser_)
        parser_.set_defaults(func=_serve)

    worker = commands.add_parser("worker", help="a policy or PRM worker process on the Redis queue")
    worker.add_argument("role", choices=["policy", "prm"])
    add_model_flags(worker)
    add_queue_flags(worker)
    worker.add_argument("--batch-size", dest="batch_size", type=int, help="most jobs per model call")
    worker.add_argument("--max-wait-ms", dest="max_wait_ms", type=float, help="how long to fill a batch")
    worker.add_argument("--metrics-port", dest="metrics_port", type=int, help="Prometheus port (0: off)")
    worker.set_defaults(func=_worker)

    from research.annotate.cli import add_subcommand as add_annotate
    from research.data.cli import add_subcommand as add_data
    from research.eval.cli import add_subcommand as add_eval
    from research.training.cli import add_subcommand as add_train

    for add in (add_data, add_annotate, add_train, add_eval):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rc = args.func(args)
    if args.command.startswith("annotate") and rc:
        raise SystemExit(rc)


if __name__ == "__main__":
    main()
