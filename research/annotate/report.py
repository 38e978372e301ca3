"""The quality report of an annotated set: steps per path, atomic-step capabilities, answer agreement, rejections.

Capabilities come from the project's capability analysis (``research.eval.capabilities``): the rule-based
``classify_step`` per step, and ``capability_stats`` for the share of steps and the share of paths using each
capability that reach the reference answer (outcome-supervised).
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from research.eval.capabilities import LABELS, capability_stats, classify_step


def quality_report(records: list[dict[str, Any]]) -> dict[str, Any]:
    paths = [r for r in records if r["status"] in ("accepted", "mismatch")]
    lengths = [len(r["steps"]) for r in paths]
    status = Counter(r["status"] for r in records)
    judged = status["accepted"] + status["mismatch"]
    analysed = [
        {
            "steps": [{"capability": classify_step(s["content"])} for s in r["steps"]],
            "correct": r["status"] == "accepted",
        }
        for r in paths
    ]
    capabilities = [
        {
            "capability": c.capability,
            "label": LABELS[c.capability],
            "steps": c.steps,
            "share": round(c.share, 4),
            "paths": c.paths,
            "outcome_supervised": round(c.outcome_supervised, 4) if c.outcome_supervised is not None else None,
        }
        for c in capability_stats(analysed)
    ]
    usage = Counter[str]()
    for r in records:
        usage.update(r.get("usage") or {})
    return {
        "problems": len(records),
        "status": {k: status.get(k, 0) for k in ("accepted", "mismatch", "rejected")},
        "answer_agreement": round(status["accepted"] / judged, 4) if judged else None,
        "yield": round(status["accepted"] / len(records), 4) if records else None,
        "match_methods": dict(Counter(r["match"]["method"] for r in paths if r.get("match")).most_common()),
        "steps_per_path": {
            "paths": len(lengths),
            "mean": round(statistics.fmean(lengths), 2) if lengths else None,
            "median": statistics.median(lengths) if lengths else None,
            "min": min(lengths) if lengths else None,
            "max": max(lengths) if lengths else None,
            "histogram": dict(sorted(Counter(lengths).items())),
        },
        "actions": dict(Counter(s["action"] for r in paths for s in r["steps"]).most_common()),
        "capabilities": capabilities,
        "rejections_by_reason": dict(Counter(r["reason"] for r in records if r["status"] == "rejected").most_common()),
        "unusable_replies_by_reason": dict(
            Counter(u["reason"] for r in records for u in r.get("unusable") or ()).most_common()
        ),
        "usage": dict(usage),
    }


def render_markdown(report: dict[str, Any]) -> str:
    s = report["status"]
    spp = report["steps_per_path"]
    agreement = report["answer_agreement"]
    lines = [
        "# Annotation quality report",
        "",
        f"Problems: {report['problems']}; accepted {s['accepted']}, mismatch {s['mismatch']}, "
        f"rejected {s['rejected']}.",
        f"Answer agreement (accepted / paths that concluded): "
        f"{'n/a' if agreement is None else f'{agreement:.1%}'}; match methods: {report['match_methods'] or '-'}.",
        f"Steps per path: mean {spp['mean']}, median {spp['median']}, min {spp['min']}, max {spp['max']}; "
        f"histogram {spp['histogram'] or '-'}.",
        f"Actions: {report['actions'] or '-'}.",
        "",
        "| capability | steps | share | paths | outcome-supervised |",
        "|---|---|---|---|---|",
    ]
    for c in report["capabilities"]:
        os_ = "-" if c["outcome_supervised"] is None else f"{c['outcome_supervised']:.1%}"
        lines.append(f"| {c['label']} | {c['steps']} | {c['share']:.1%} | {c['paths']} | {os_} |")
    lines += ["", "| rejection reason | problems |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["rejections_by_reason"].items()] or ["| - | 0 |"]
    lines += ["", "| unusable reply reason | replies |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["unusable_replies_by_reason"].items()] or ["| - | 0 |"]
    u = report["usage"]
    lines += [
        "",
        f"Usage: {u.get('calls', 0)} calls, {u.get('prompt_tokens', 0)} prompt tokens, "
        f"{u.get('completion_tokens', 0)} completion tokens.",
    ]
    return "\n".join(lines) + "\n"
