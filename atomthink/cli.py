"""``atomthink``: serve, gateway, worker, openai-server, data, train, eval. Flags override settings."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from atomthink.settings import Settings


def settings_from_args(args: argparse.Namespace, names: Sequence[str]) -> Settings:
    """Settings from the environment and config files, with the given CLI flags (when set) on top."""
    overrides: dict[str, Any] = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return Settings(**overrides)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy-model", dest="policy_model", help="policy checkpoint directory")
    parser.add_argument("--prm-model", dest="prm_model", help="PRM checkpoint directory")
    parser.add_argument("--prompt-preset", dest="prompt_preset", help="prompt preset (default: auto)")
    parser.add_argument("--prm-preset", dest="prm_preset", help="PRM format preset (default: auto)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")


MODEL_FLAGS = ("policy_model", "prm_model", "prompt_preset", "prm_preset", "device")


def _queue_overrides(args: argparse.Namespace) -> None:
    """``--redis URL`` selects the Redis queue."""
    if getattr(args, "redis", None):
        args.queue, args.redis_url = "redis", args.redis


QUEUE_FLAGS = ("queue", "redis_url", "key_prefix")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.app import create_app
    from service.runtime import embedded_runtime, gateway_runtime

    _queue_overrides(args)
    settings = settings_from_args(args, ("host", "port", *MODEL_FLAGS, *QUEUE_FLAGS))
    if args.command == "gateway" and settings.queue != "redis":
        raise SystemExit("atomthink gateway needs the Redis queue: pass --redis URL or set ATOMTHINK_QUEUE=redis")
    factory = gateway_runtime if args.command == "gateway" else embedded_runtime
    app = create_app(settings, factory)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level.lower())


def _worker(args: argparse.Namespace) -> None:
    import asyncio

    from workers.main import run_worker

    _queue_overrides(args)
    settings = settings_from_args(args, (*MODEL_FLAGS, *QUEUE_FLAGS, "metrics_port", "batch_size", "max_wait_ms"))
    if args.batch_size is not None or args.max_wait_ms is not None:
        prefix = "policy" if args.role == "policy" else "prm"
        updates = {f"{prefix}_batch_size": args.batch_size, f"{prefix}_max_wait_ms": args.max_wait_ms}
        settings = settings.model_copy(update={k: v for k, v in updates.items() if v is not None})
    asyncio.run(run_worker(args.role, settings))


def _openai_server(args: argparse.Namespace) -> None:
    from workers.openai_server import serve_openai

    settings = settings_from_args(args, (*MODEL_FLAGS, "policy_served_name", "prm_served_name"))
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    serve_openai(settings, roles, args.host, args.port, args.log_level.lower())


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

    openai = commands.add_parser(
        "openai-server", help="OpenAI-compatible server over the transformers backends (a CPU stand-in for vLLM)"
    )
    openai.add_argument("--host", default="127.0.0.1")
    openai.add_argument("--port", type=int, default=8001)
    openai.add_argument("--roles", default="policy,prm", help="models to serve: policy, prm or both (default)")
    add_model_flags(openai)
    openai.add_argument("--policy-name", dest="policy_served_name", help="served name of the policy")
    openai.add_argument("--prm-name", dest="prm_served_name", help="served name of the PRM")
    openai.set_defaults(func=_openai_server)

    from atomthink.data.cli import add_subcommand as add_data
    from atomthink.eval.cli import add_subcommand as add_eval
    from atomthink.training.cli import add_subcommand as add_train

    for add in (add_data, add_train, add_eval):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
