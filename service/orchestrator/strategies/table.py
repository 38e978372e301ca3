"""The README's strategy tables, rendered from the registry: the strategies, then every strategy field with the
strategies that take it, its values, its default and its docstring.

    python -m service.orchestrator.strategies.table README.md   # rewrite the block between the markers

``tests/unit/service/test_strategy_registry.py`` checks that the README holds what this renders.
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

START = "<!-- strategy-table:start -->"
END = "<!-- strategy-table:end -->"


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


def markdown() -> str:
    """The strategies and their fields as two markdown tables."""
    lines = [
        "| strategy | `mode` | what runs | quota cost per step |",
        "|---|---|---|---|",
    ]
    for strategy in registry.ordered():
        name = f"`{strategy.name}`" + (" (default)" if strategy.name == registry.DEFAULT_SLOW else "")
        lines.append(f"| {name} | `{strategy.mode}` | {strategy.summary} | {strategy.cost_doc} |")
    lines += ["", "| field | strategies | values | default | meaning |", "|---|---|---|---|---|"]
    seen: dict[tuple[str, str, str, str], list[str]] = {}
    for strategy in registry.ordered():
        for field_name, info in strategy.params.model_fields.items():
            key = (field_name, _values(info), _default(info), " ".join((info.description or "").split()))
            seen.setdefault(key, []).append(strategy.name)
    for (field_name, values, default, meaning), owners in seen.items():
        lines.append(f"| `{field_name}` | {', '.join(owners)} | {values} | {default} | {meaning} |")
    return "\n".join(lines)


def rewrite(path: Path) -> bool:
    """Replace the block between the markers in ``path``; True when it changed."""
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{markdown()}\n{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def current(path: Path) -> str:
    """What the README holds between the markers."""
    return path.read_text().split(START, 1)[1].split(END, 1)[0].strip("\n")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print(f"{target}: {'rewritten' if rewrite(target) else 'up to date'}")
