"""Tables and plots from per-item results: the paper's modes-by-split table, the strategy comparison, the
test-time-scaling curves (accuracy, p50/p95 latency against candidate count) and the capability analysis.

Accuracy counts every attempted item (a failed solve is a wrong answer); latency is the service's own
``timings_ms.total`` per solve (with ``--concurrency`` above 1 it includes waiting for batch-mates).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from research.eval.capabilities import LABELS, CapabilityStats, capability_stats
from research.eval.datasets import MATHVERSE_VERSIONS, EvalItem
from research.eval.suites import Plan, RunConfig

DATASET_NAMES = {"synthetic": "Synthetic", "mathvista": "MathVista", "mathverse": "MathVerse"}
SPLIT_ORDER = {"mathvista": ("General", "Math", "Other"), "mathverse": MATHVERSE_VERSIONS}
TOTAL = "Total"


@dataclass
class RunSummary:
    """Figures of one run config over the evaluated items."""

    run: str
    label: str
    n: int
    correct: int
    errors: int
    accuracy: float
    mean_latency_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    mean_tokens: float | None
    mean_policy_calls: float | None
    mean_prm_calls: float | None
    by_split: dict[str, float] = field(default_factory=dict)
    """Accuracy per ``"dataset/split"`` and ``"dataset/Total"``."""


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(config: RunConfig, records: Sequence[dict[str, Any]]) -> RunSummary:
    """Accuracy, latency and cost of one config's records."""
    ok = [r for r in records if not r.get("error")]
    latency = [float(r["latency_ms"]) for r in ok]
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        groups[f"{r['dataset']}/{r['split']}"].append(bool(r.get("correct")))
        groups[f"{r['dataset']}/{TOTAL}"].append(bool(r.get("correct")))
    correct = sum(bool(r.get("correct")) for r in records)
    return RunSummary(
        run=config.key,
        label=config.label,
        n=len(records),
        correct=correct,
        errors=len(records) - len(ok),
        accuracy=correct / len(records) if records else 0.0,
        mean_latency_ms=_mean(latency),
        p50_latency_ms=_pct(latency, 50),
        p95_latency_ms=_pct(latency, 95),
        mean_tokens=_mean([float(r["generated_tokens"]) for r in ok]),
        mean_policy_calls=_mean([float(r["policy_calls"]) for r in ok]),
        mean_prm_calls=_mean([float(r["prm_calls"]) for r in ok]),
        by_split={k: sum(v) / len(v) for k, v in groups.items()},
    )


def split_columns(items: Iterable[EvalItem]) -> list[tuple[str, str]]:
    """``(dataset, split)`` columns in table order: each dataset's splits, then its total."""
    seen: dict[str, set[str]] = {}
    for item in items:
        seen.setdefault(item.dataset, set()).add(item.split)
    columns: list[tuple[str, str]] = []
    for dataset, splits in seen.items():
        order = SPLIT_ORDER.get(dataset, ())
        ordered = [s for s in order if s in splits] + sorted(s for s in splits if s not in order)
        if len(ordered) > 1:
            columns += [(dataset, s) for s in ordered]
        columns.append((dataset, TOTAL))
    return columns


def _pct_cell(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num_cell(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _column_name(dataset: str, split: str) -> str:
    return f"{DATASET_NAMES.get(dataset, dataset)} {split}"


def modes_table(summaries: Sequence[RunSummary], columns: Sequence[tuple[str, str]]) -> str:
    """The paper's layout: one row per inference mode, accuracy (%) per dataset split, then cost."""
    header = ["inference", *(_column_name(d, s) for d, s in columns), "n", "mean latency ms", "mean tokens"]
    rows = [
        [
            s.label,
            *(_pct_cell(s.by_split.get(f"{d}/{sp}")) for d, sp in columns),
            str(s.n),
            _num_cell(s.mean_latency_ms),
            _num_cell(s.mean_tokens, 1),
        ]
        for s in summaries
    ]
    return _table(header, rows)


def strategy_table(summaries: Sequence[RunSummary], datasets: Sequence[str]) -> str:
    """Strategy comparison: accuracy (%) per dataset and overall, with latency percentiles and cost."""
    header = [
        "strategy",
        *(f"{DATASET_NAMES.get(d, d)} {TOTAL}" for d in datasets),
        "all",
        "p50 ms",
        "p95 ms",
        "tokens",
        "policy calls",
        "PRM calls",
    ]
    rows = [
        [
            s.label,
            *(_pct_cell(s.by_split.get(f"{d}/{TOTAL}")) for d in datasets),
            _pct_cell(s.accuracy),
            _num_cell(s.p50_latency_ms),
            _num_cell(s.p95_latency_ms),
            _num_cell(s.mean_tokens, 1),
            _num_cell(s.mean_policy_calls, 1),
            _num_cell(s.mean_prm_calls, 1),
        ]
        for s in summaries
    ]
    return _table(header, rows)


def scaling_curves(
    configs: Sequence[RunConfig], summaries: dict[str, RunSummary]
) -> dict[str, list[tuple[int, RunSummary]]]:
    """Points ``(candidates, summary)`` of each scaling curve, by candidate count."""
    curves: dict[str, list[tuple[int, RunSummary]]] = defaultdict(list)
    for config in configs:
        if config.candidates is not None and config.key in summaries:
            curves[config.curve].append((config.candidates, summaries[config.key]))
    return {name: sorted(points, key=lambda p: p[0]) for name, points in curves.items()}


def scaling_table(curves: dict[str, list[tuple[int, RunSummary]]]) -> str:
    header = ["strategy", "N", "accuracy %", "p50 ms", "p95 ms", "tokens", "n"]
    rows = [
        [
            name,
            str(n),
            _pct_cell(s.accuracy),
            _num_cell(s.p50_latency_ms),
            _num_cell(s.p95_latency_ms),
            _num_cell(s.mean_tokens, 1),
            str(s.n),
        ]
        for name, points in curves.items()
        for n, s in points
    ]
    return _table(header, rows)


def capability_table(stats: Sequence[CapabilityStats]) -> str:
    header = ["capability", "steps", "share %", "mean PRM score", "outcome-supervised %", "paths"]
    rows = [
        [
            LABELS[s.capability],
            str(s.steps),
            _pct_cell(s.share),
            _num_cell(s.mean_prm, 3),
            _pct_cell(s.outcome_supervised),
            str(s.paths),
        ]
        for s in stats
    ]
    return _table(header, rows)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scaling(curves: dict[str, list[tuple[int, RunSummary]]], out_dir: Path) -> list[Path]:
    """``scaling_accuracy.png`` and ``scaling_latency.png`` (p50 solid, p95 dashed), candidate count on a log2
    axis."""
    plt = _pyplot()
    paths = [out_dir / "scaling_accuracy.png", out_dir / "scaling_latency.png"]
    ticks = sorted({n for points in curves.values() for n, _ in points})
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        ax.plot([n for n, _ in points], [100 * s.accuracy for _, s in points], marker="o", label=name)
    _candidate_axis(ax, ticks)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Test-time scaling: accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, points) in enumerate(curves.items()):
        color = f"C{i}"
        xs = [n for n, _ in points]
        ax.plot(xs, [s.p50_latency_ms or 0 for _, s in points], marker="o", color=color, label=f"{name} p50")
        ax.plot(xs, [s.p95_latency_ms or 0 for _, s in points], marker="^", ls="--", color=color, label=f"{name} p95")
    _candidate_axis(ax, ticks)
    ax.set_ylabel("latency per solve (ms)")
    ax.set_title("Test-time scaling: latency")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def _candidate_axis(ax: Any, ticks: Sequence[int]) -> None:
    if len(ticks) > 1 and min(ticks) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(ticks))
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("candidates N")
    ax.grid(alpha=0.3)


def plot_capabilities(stats: Sequence[CapabilityStats], path: Path) -> Path:
    """Grouped bars per capability: share of steps, mean PRM score and outcome-supervised score."""
    plt = _pyplot()
    names = [LABELS[s.capability].replace(" / ", "/\n").replace(" ", "\n", 1) for s in stats]
    series = {
        "share of steps": [s.share for s in stats],
        "mean PRM score": [s.mean_prm or 0.0 for s in stats],
        "outcome-supervised score": [s.outcome_supervised or 0.0 for s in stats],
    }
    x = np.arange(len(stats))
    width = 0.27
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - 1) * width, values, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Atomic-step capabilities")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass
class Report:
    """What :func:`write_report` wrote and the figures behind it."""

    summaries: dict[str, RunSummary]
    files: list[Path]
    capability_run: str | None = None
    capabilities: list[CapabilityStats] = field(default_factory=list)


def capability_run(plan: Plan) -> RunConfig | None:
    """The run the capability analysis reads: the SlowThink row of the modes table, else the first slow run."""
    slow = [c for c in [*plan.modes, *plan.runs] if c.mode == "slow"]
    return slow[0] if slow else (plan.runs[0] if plan.runs else None)


def write_report(
    out_dir: Path, plan: Plan, items: Sequence[EvalItem], records: Sequence[dict[str, Any]], *, header: str = ""
) -> Report:
    """``summary.md`` (all tables), ``summary.json`` and the PNG plots, from the records of ``plan``'s runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_run[record["run"]].append(record)
    summaries = {c.key: summarize(c, by_run.get(c.key, [])) for c in plan.runs}
    columns = split_columns(items)
    datasets = list(dict.fromkeys(d for d, _ in columns))
    files: list[Path] = []
    parts = ["# AtomThink evaluation\n", header]
    if plan.modes:
        parts += [
            "\n## Modes (accuracy %, by dataset split)\n\n",
            modes_table([replace(summaries[c.key], label=c.mode_label) for c in plan.modes], columns),
        ]
    if plan.strategies:
        parts += [
            "\n## Strategies (accuracy %, latency per solve, mean cost per item)\n\n",
            strategy_table([summaries[c.key] for c in plan.strategies], datasets),
        ]
    curves = scaling_curves(plan.scaling, summaries)
    if curves:
        parts += ["\n## Test-time scaling\n\n", scaling_table(curves)]
        files += plot_scaling(curves, out_dir)
        parts += ["\n![accuracy against N](scaling_accuracy.png)\n![latency against N](scaling_latency.png)\n"]
    report = Report(summaries, files)
    reference = capability_run(plan)
    if plan.capabilities and reference is not None:
        stats = capability_stats(by_run.get(reference.key, []))
        report.capability_run, report.capabilities = reference.key, stats
        parts += [f"\n## Atomic-step capabilities ({reference.label})\n\n", capability_table(stats)]
        files.append(plot_capabilities(stats, out_dir / "capabilities.png"))
        parts += ["\n![capabilities](capabilities.png)\n"]
    (out_dir / "summary.md").write_text("".join(parts), encoding="utf-8")
    summary_json = {
        "runs": [{**c.as_dict(), **asdict(summaries[c.key])} for c in plan.runs],
        "capability_run": report.capability_run,
        "capabilities": [asdict(s) for s in report.capabilities],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary_json, indent=2) + "\n", encoding="utf-8")
    report.files = [out_dir / "summary.md", out_dir / "summary.json", *files]
    return report


def console_table(summaries: Iterable[RunSummary]) -> str:
    """What ``atomthink eval`` prints: accuracy, mean latency and mean generated tokens per run."""
    header = ["run", "n", "accuracy %", "mean latency ms", "p95 ms", "mean tokens", "errors"]
    rows = [
        [
            s.run,
            str(s.n),
            _pct_cell(s.accuracy),
            _num_cell(s.mean_latency_ms),
            _num_cell(s.p95_latency_ms),
            _num_cell(s.mean_tokens, 1),
            str(s.errors),
        ]
        for s in summaries
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
