"""The strategy tables, rendered from the registry: the strategies (README.md), and every strategy field with the
strategies that take it, its values, its default and its docstring (docs/strategies.md).

    python -m service.orchestrator.strategies.table   # rewrite both blocks between their markers (from the repo root)

``tests/unit/service/test_strategy_registry.py`` checks that both files hold what this renders.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo

from service.orchestrator.strategies import registry

TABLE = "strategy-table"
"""The block of README.md: one row per strategy."""
FIELDS = "strategy-fields"
"""The block of docs/strategies.md: one row per strategy field."""


def _values(info: FieldInfo) -> str:
    """The field's type and limits, e.g. ``1..64`` or `` `root`, `beams` ``."""
    annotation: Any = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    if annotation is bool:
        return "`true`, `false`"
    low: object = None
    high: object = None
    low_open = high_open = False
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, low_open = item.gt, True
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high, high_open = item.lt, True
    kind = "integer" if annotation is int else "number"
    if low is None and high is None:
        return kind
    left = f"{'>' if low_open else ''}{low}" if low is not None else ""
    right = f"{'<' if high_open else ''}{high}" if high is not None else ""
    return f"{kind} {left}..{right}"


def _default(info: FieldInfo) -> str:
    if info.default is None:
        return "unset"
    value = info.default
    return f"`{str(value).lower()}`" if isinstance(value, bool) else f"`{value}`"


def markdown(block: str = TABLE) -> str:
    """The strategies (``TABLE``) or their fields (``FIELDS``) as a markdown table."""
    if block == FIELDS:
        return _fields()
    lines = [
        "| strategy | `mode` | what runs | quota cost per step |",
        "|---|---|---|---|",
    ]
    for strategy in registry.ordered():
        name = f"`{strategy.name}`" + (" (default)" if strategy.name == registry.DEFAULT_SLOW else "")
        lines.append(f"| {name} | `{strategy.mode}` | {strategy.summary} | {strategy.cost_doc} |")
    return "\n".join(lines)


def _fields() -> str:
    lines = ["| field | strategies | values | default | meaning |", "|---|---|---|---|---|"]
    seen: dict[tuple[str, str, str, str], list[str]] = {}
    for strategy in registry.ordered():
        for field_name, info in strategy.params.model_fields.items():
            key = (field_name, _values(info), _default(info), " ".join((info.description or "").split()))
            seen.setdefault(key, []).append(strategy.name)
    for (field_name, values, default, meaning), owners in seen.items():
        lines.append(f"| `{field_name}` | {', '.join(owners)} | {values} | {default} | {meaning} |")
    return "\n".join(lines)


def _markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:start -->", f"<!-- {block}:end -->"


def rewrite(path: Path, block: str = TABLE) -> bool:
    """Replace ``block`` between its markers in ``path``; True when it changed."""
    start, end = _markers(block)
    text = path.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{markdown(block)}\n{end}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def current(path: Path, block: str = TABLE) -> str:
    """What ``path`` holds between the markers of ``block``."""
    start, end = _markers(block)
    return path.read_text().split(start, 1)[1].split(end, 1)[0].strip("\n")


TARGETS = {TABLE: "README.md", FIELDS: "docs/strategies.md"}
"""Which file (from the repository root) holds which block."""

if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for block, name in TARGETS.items():
        print(f"{name}: {'rewritten' if rewrite(root / name, block) else 'up to date'}")
