"""Command-line flags shared by every ``atomthink`` subcommand, and the one way they become settings."""

from __future__ import annotations

import argparse
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
