"""``atomthink``: serve, and (from their own packages) data, train and eval. Flags override settings."""

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


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.app import create_app

    settings = settings_from_args(args, ("host", "port", *MODEL_FLAGS))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level.lower())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atomthink", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="gateway with in-process policy and PRM workers")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    add_model_flags(serve)
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
