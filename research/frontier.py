"""Accuracy against mean generated tokens, one curve per strategy, from ``atomthink eval`` results.

    python -m research.frontier runs/eval-strategies runs/eval-strategies-beam --plot docs/strategies.png

Reads each folder's ``results.jsonl`` (one line per solved item), groups the lines by run (strategy, candidates, beam
width), and prints a markdown table (items, accuracy with its 95% Wilson interval, mean generated tokens, mean prompt
tokens, mean paths, PRM calls); ``--plot`` draws the frontier. Only problems every run solved are counted, so the
rows compare the same items.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Point:
    strategy: str
    candidates: int
    beam_width: int | None
    items: int
    accuracy: float
    low: float
    high: float
    tokens: float
    prompt_tokens: float
    paths: float | None
    prm_calls: float

    @property
    def label(self) -> str:
        width = f" x width {self.beam_width}" if self.beam_width else ""
        return f"{self.strategy}, N = {self.candidates}{width}"


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def load(folders: Sequence[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for folder in folders:
        with (folder / "results.jsonl").open() as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return [row for row in rows if not row.get("error")]


def curve_names(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per run, the curve it belongs to: its strategy (QuickThink: ``quick``), then ``adaptive`` or ``pruned`` when it
    is, then its aggregation where the rows hold one strategy with several, then its other fields."""
    aggregations: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        aggregations[row.get("strategy") or row.get("mode", "")].add(str(row.get("aggregation")))
    names = {}
    for row in rows:
        strategy = row.get("strategy") or row.get("mode", "")
        name = strategy + (" adaptive" if row.get("adaptive") else "")
        name += f" pruned {row['prune_fraction']:g}" if row.get("prune_fraction") else ""
        if len(aggregations[strategy]) > 1:
            name += f" {row.get('aggregation')}"
        name += "".join(f" {field}={value}" for field, value in sorted((row.get("fields") or {}).items()))
        names[row["run"]] = name
    return names


def points(rows: Sequence[dict[str, Any]]) -> list[Point]:
    """One point per run, over the problems every run solved."""
    by_run: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_run[row["run"]][row["id"]] = row
    names = curve_names(rows)
    common = set.intersection(*(set(items) for items in by_run.values())) if by_run else set()
    out = []
    for items in by_run.values():
        solved = [items[i] for i in sorted(common)]
        if not solved:
            continue
        first = solved[0]
        correct = sum(bool(r["correct"]) for r in solved)
        low, high = wilson(correct, len(solved))
        paths = [r["paths"] for r in solved if r.get("paths") is not None]
        out.append(
            Point(
                strategy=names[first["run"]],
                candidates=first.get("candidates") or 1,
                beam_width=first.get("beam_width"),
                items=len(solved),
                accuracy=correct / len(solved),
                low=low,
                high=high,
                tokens=sum(r["generated_tokens"] for r in solved) / len(solved),
                prompt_tokens=sum(r.get("prompt_tokens") or 0 for r in solved) / len(solved),
                paths=sum(paths) / len(paths) if paths else None,
                prm_calls=sum(r["prm_calls"] for r in solved) / len(solved),
            )
        )
    return sorted(out, key=lambda p: (p.strategy, p.candidates))


def markdown(rows: Sequence[Point]) -> str:
    lines = [
        "| strategy | N | items | accuracy % (95% interval) | mean generated tokens | mean prompt tokens "
        "| mean paths | mean PRM calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in rows:
        width = f" (x{p.beam_width})" if p.beam_width else ""
        paths = f"{p.paths:.2f}" if p.paths is not None else ""
        lines.append(
            f"| {p.strategy} | {p.candidates}{width} | {p.items} | {100 * p.accuracy:.1f} ({100 * p.low:.0f} to "
            f"{100 * p.high:.0f}) | {p.tokens:.1f} | {p.prompt_tokens:.0f} | {paths} | {p.prm_calls:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Point], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 6.5))
    by_strategy: dict[str, list[Point]] = defaultdict(list)
    for p in rows:
        by_strategy[p.strategy].append(p)
    markers = "osD^v<>phX*"
    for k, (strategy, curve) in enumerate(sorted(by_strategy.items())):
        curve.sort(key=lambda p: p.tokens)
        axes.plot([p.tokens for p in curve], [100 * p.accuracy for p in curve], marker=markers[k % len(markers)],
                  linestyle="-" if k < 10 else "--", label=strategy)  # fmt: skip
        for p in curve:
            axes.annotate(str(p.candidates), (p.tokens, 100 * p.accuracy), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("mean generated tokens per problem (log)")
    axes.set_ylabel("accuracy %")
    axes.set_title(f"accuracy against generated tokens ({rows[0].items if rows else 0} problems; labels: N)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="atomthink eval --out folders")
    parser.add_argument("--plot", type=Path, help="save the frontier plot here (PNG)")
    args = parser.parse_args(argv)
    rows = points(load(args.folders))
    print(markdown(rows))
    if args.plot:
        print(f"plot: {plot(rows, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
