"""Grafana dashboards as code. ``python deploy/grafana/dashboards.py`` rewrites ``dashboards/*.json``;
``--check`` exits 1 when a committed file differs from what this module generates.

Two dashboards, both on the provisioned Prometheus datasource (uid ``prometheus``):

- ``atomthink.json``: solve latency p50/p95/p99 and generated tokens per solve against candidate count per mode and
  strategy, paths sampled and saved by adaptive votes and pruning, throughput, errors
  and 429s, queue depth and pick-up time, redeliveries and dead letters, batch sizes, policy versus PRM time.
- ``vllm.json``: vLLM's own metrics (KV cache usage, waiting requests, time to first token, ...).

``queries`` and ``render`` give the PromQL a dashboard sends, with Grafana's variables replaced, for the tests.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
SOLVES = 'mode=~"$mode", strategy=~"$strategy"'
NOT_OK = 'status!~"ok|truncated|cancelled"'  # cancelled: the client went away
OVERLOADED = 'reason="overloaded"'
VLLM = 'model_name=~"$model_name"'
QUANTILES = (0.5, 0.95, 0.99)


@dataclass
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False

    def to_json(self, ref_id: str) -> dict[str, Any]:
        target: dict[str, Any] = {"refId": ref_id, "datasource": DATASOURCE, "expr": self.expr}
        if self.instant:
            target.update(instant=True, range=False, format="table")
        else:
            target["legendFormat"] = self.legend or "__auto"
        return target


@dataclass
class Panel:
    """A panel; ``width`` of 24 columns, laid out left to right, top to bottom."""

    title: str
    targets: list[Target]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    title: str


def quantiles(
    metric: str, by: str, selector: str = "", legend: str = "", qs: Sequence[float] = QUANTILES
) -> list[Target]:
    """``histogram_quantile`` of a Prometheus histogram for each quantile, grouped by ``by``."""
    sel = f"{{{selector}}}" if selector else ""
    return [
        Target(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{sel}[{RATE}])))",
            f"p{round(q * 100)} {legend}".strip(),
        )
        for q in qs
    ]


def mean(metric: str, by: str, selector: str = "", legend: str = "") -> Target:
    """Mean of a histogram's observations over the rate window."""
    sel = f"{{{selector}}}" if selector else ""
    return Target(
        f"sum by ({by}) (rate({metric}_sum{sel}[{RATE}])) / sum by ({by}) (rate({metric}_count{sel}[{RATE}]))",
        f"mean {legend}".strip(),
    )


def query_variable(name: str, query: str) -> dict[str, Any]:
    """A multi-value template variable over a label's values, defaulting to All (``.*``)."""
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [target.to_json(chr(ord("A") + i)) for i, target in enumerate(panel.targets)],
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
    }
    if panel.kind == "timeseries":
        body["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    body.update(panel.extra)
    return body


def dashboard(
    uid: str, title: str, items: Sequence[Panel | Row], variables: Sequence[dict[str, Any]] = (), **extra: Any
) -> dict[str, Any]:
    """The dashboard JSON model, with ids and grid positions assigned in order."""
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y, x, row_height = y + row_height, 0, 0
            panels.append(
                {
                    "id": panel_id,
                    "type": "row",
                    "title": item.title,
                    "collapsed": False,
                    "panels": [],
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                }
            )
            y += 1
            continue
        if x + item.width > 24:
            y, x, row_height = y + row_height, 0, 0
        panels.append(_panel_json(item, panel_id, x, y))
        x, row_height = x + item.width, max(row_height, item.height)
    return {
        "uid": uid,
        "title": title,
        "tags": ["atomthink"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {"list": list(variables)},
        "annotations": {"list": []},
        "links": [{"title": "AtomThink", "type": "dashboards", "tags": ["atomthink"], "asDropdown": False}],
        "panels": panels,
        **extra,
    }


def _latency_table() -> Panel:
    """Latency per (mode, strategy, candidates) over the dashboard's time range: one row per combination."""
    by = "mode, strategy, candidates"
    bucket = f"rate(atomthink_solve_latency_seconds_bucket{{{SOLVES}}}[$__range])"
    targets = [Target(f"histogram_quantile({q}, sum by (le, {by}) ({bucket}))", instant=True) for q in QUANTILES]
    targets.append(
        # "> 0": every label set exists from start-up (pre-created at zero); list only the ones that served solves
        Target(
            f"sum by ({by}) (increase(atomthink_solve_latency_seconds_count{{{SOLVES}}}[$__range])) > 0", instant=True
        )
    )
    names = {f"Value #{chr(ord('A') + i)}": f"p{round(q * 100)}" for i, q in enumerate(QUANTILES)}
    names["Value #D"] = "solves"
    transformations = [
        {"id": "merge", "options": {}},
        {
            "id": "convertFieldType",
            "options": {"conversions": [{"targetField": "candidates", "destinationType": "number"}]},
        },
        {
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True},
                "renameByName": names,
                "indexByName": {"mode": 0, "strategy": 1, "candidates": 2},
            },
        },
        {"id": "sortBy", "options": {"sort": [{"field": "candidates"}]}},
    ]
    overrides = [
        {
            "matcher": {"id": "byName", "options": "solves"},
            "properties": [{"id": "unit", "value": "short"}, {"id": "decimals", "value": 0}],
        }
    ]
    return Panel(
        "Solve latency by candidate count (dashboard range)",
        targets,
        unit="s",
        kind="table",
        width=24,
        description="Quantiles over the whole selected time range; candidates is the bucket 1, 2, 4, ..., 64.",
        extra={
            "transformations": transformations,
            "fieldConfig": {"defaults": {"unit": "s", "decimals": 3}, "overrides": overrides},
        },
    )


def atomthink_dashboard() -> dict[str, Any]:
    """Gateway, queue and worker metrics (``atomthink_*``)."""
    solve_legend = "{{mode}} {{strategy}} n={{candidates}}"
    latency = [
        Panel(
            f"Solve latency p{round(q * 100)} by candidate count",
            [
                Target(t.expr, solve_legend)
                for t in quantiles("atomthink_solve_latency_seconds", "mode, strategy, candidates", SOLVES, qs=(q,))
            ],
            unit="s",
            width=8,
            description="End-to-end /solve latency (ok or truncated) per mode, strategy and candidate-count bucket.",
        )
        for q in QUANTILES
    ]
    ok = 'status=~"ok|truncated"'
    items: list[Panel | Row] = [
        Row("Solve latency against candidate count"),
        *latency,
        _latency_table(),
        Row("Compute per solve: tokens and paths against candidate count"),
        Panel(
            "Generated tokens per solve by candidate count (mean)",
            [mean("atomthink_solve_generated_tokens", "mode, strategy, candidates", SOLVES, solve_legend)],
            width=8,
            description="Tokens a solve generated over all its candidates, per mode, strategy and candidate-count "
            "bucket (the ceiling for adaptive votes): adaptive votes and pruning bend this curve down.",
        ),
        Panel(
            "Generated tokens per solve by candidate count (p50 / p95)",
            quantiles(
                "atomthink_solve_generated_tokens", "mode, strategy, candidates", SOLVES, solve_legend, qs=(0.5, 0.95)
            ),
            width=8,
        ),
        Panel(
            "Paths sampled and saved (/s)",
            [
                Target(
                    f"sum by (strategy) (rate(atomthink_solve_paths_total{{{SOLVES}}}[{RATE}]))", "{{strategy}} sampled"
                ),
                Target(
                    f"sum by (strategy) (rate(atomthink_saved_paths_total{{{SOLVES}}}[{RATE}]))", "{{strategy}} saved"
                ),
                Target(
                    f"sum(rate(atomthink_saved_tokens_total{{{SOLVES}}}[{RATE}]))"
                    f" / (sum(rate(atomthink_saved_tokens_total{{{SOLVES}}}[{RATE}]))"
                    f' + sum(rate(atomthink_generated_tokens_total{{mode="slow"}}[{RATE}])))',
                    "share of slow tokens saved (estimate)",
                ),
            ],
            width=8,
            description="Path-level strategies: whole paths sampled, and paths saved against the candidate ceiling "
            "(adaptive votes stop early, pruned best-of-N stops paths); the share is the estimated tokens saved "
            "over those plus the slow tokens generated.",
        ),
        Row("Traffic, errors and 429s"),
        Panel(
            "Throughput (solves/s)",
            [
                Target(
                    f"sum by (mode, strategy) (rate(atomthink_solve_requests_total{{{ok}, {SOLVES}}}[{RATE}]))",
                    "{{mode}} {{strategy}}",
                )
            ],
            unit="reqps",
            width=8,
        ),
        Panel(
            "Solve outcomes by status",
            [Target(f"sum by (status) (rate(atomthink_solve_requests_total{{{SOLVES}}}[{RATE}]))", "{{status}}")],
            unit="reqps",
            width=8,
            description="ok, truncated (deadline), cancelled (client left), and error codes such as job_timeout.",
        ),
        Panel(
            "Error ratio and 429 share",
            [
                Target(
                    f"(sum(rate(atomthink_solve_requests_total{{{NOT_OK}}}[{RATE}])) or vector(0))"
                    f" / sum(rate(atomthink_solve_requests_total[{RATE}]))",
                    "solve errors / solves",
                ),
                Target(
                    f"sum(rate(atomthink_rejected_requests_total{{{OVERLOADED}}}[{RATE}]))"
                    f" / (sum(rate(atomthink_solve_requests_total[{RATE}]))"
                    f" + sum(rate(atomthink_rejected_requests_total[{RATE}])))",
                    "429 / all requests",
                ),
            ],
            unit="percentunit",
            width=8,
        ),
        Panel(
            "429s and other rejections (/s)",
            [
                Target(f"sum(rate(atomthink_rejected_requests_total{{{OVERLOADED}}}[{RATE}]))", "429 overloaded"),
                Target(f"sum by (reason) (rate(atomthink_rejected_requests_total[{RATE}]))", "{{reason}}"),
            ],
            unit="reqps",
            width=8,
        ),
        Panel("In-flight solves", [Target("sum(atomthink_in_flight_requests)", "in flight")], width=8),
        Panel(
            "Generated tokens/s",
            [
                Target(f"sum by (mode) (rate(atomthink_generated_tokens_total[{RATE}]))", "{{mode}}"),
                Target(f"sum(rate(atomthink_worker_generated_tokens_total[{RATE}]))", "policy workers"),
            ],
            width=8,
        ),
        Panel(
            "Search-tree nodes expanded per solve (p50 / p95)",
            quantiles("atomthink_expanded_nodes", "mode, strategy", SOLVES, "{{mode}} {{strategy}}", qs=(0.5, 0.95)),
            width=12,
        ),
        Panel(
            "Scrape targets up",
            [Target('up{job=~"atomthink-.*"}', "{{job}} {{role}} {{instance}}")],
            width=12,
            description="1 when Prometheus reaches the gateway and each worker.",
        ),
        Row("Queue"),
        Panel(
            "Queue depth",
            [
                Target("max by (role) (atomthink_queue_waiting_jobs)", "{{role}} waiting"),
                Target("max by (role) (atomthink_queue_pending_jobs)", "{{role}} pending (at a worker)"),
            ],
            width=8,
            description="Jobs in each role's Redis stream; every gateway reports the same stream, hence max.",
        ),
        Panel(
            "Pick-up time (enqueue to worker)",
            [
                *quantiles("atomthink_worker_pickup_seconds", "role", legend="{{role}} (worker)", qs=(0.5, 0.95)),
                *quantiles("atomthink_queue_wait_seconds", "role", legend="{{role}} (per job)", qs=(0.95,)),
            ],
            unit="s",
            width=8,
        ),
        Panel(
            "Redeliveries and dead letters (/s)",
            [
                Target(f"sum by (role) (rate(atomthink_queue_redeliveries_total[{RATE}]))", "{{role}} redelivered"),
                Target(f"sum by (role) (rate(atomthink_queue_dead_letters_total[{RATE}]))", "{{role}} dead-lettered"),
            ],
            unit="reqps",
            width=8,
            description="Redelivered: claimed from a dead or stuck worker (XAUTOCLAIM). Dead letters fail a request.",
        ),
        Row("Workers: batching, policy versus PRM time"),
        Panel(
            "Policy vs PRM job latency (enqueue to result)",
            quantiles("atomthink_job_latency_seconds", "role", legend="{{role}}", qs=(0.5, 0.95)),
            unit="s",
            width=8,
        ),
        Panel(
            "Model call time per batch",
            quantiles("atomthink_worker_model_call_seconds", "role", legend="{{role}}", qs=(0.5, 0.95)),
            unit="s",
            width=8,
        ),
        Panel(
            "Model busy time (model-call seconds per second)",
            [Target(f"sum by (role) (rate(atomthink_worker_model_call_seconds_sum[{RATE}]))", "{{role}}")],
            unit="percentunit",
            width=8,
            description="Summed over workers: 1.0 = one worker's model busy all the time.",
        ),
        Panel(
            "Jobs per model call",
            [
                mean("atomthink_worker_batch_jobs", "role", legend="{{role}}"),
                mean("atomthink_job_batch_size", "role", legend="{{role}}, per job (batch it rode in)"),
                *quantiles("atomthink_worker_batch_jobs", "role", legend="{{role}}", qs=(0.95,)),
            ],
            width=8,
        ),
        Panel(
            "Rows (candidates or paths) per model call",
            [
                mean("atomthink_worker_batch_rows", "role", legend="{{role}}"),
                *quantiles("atomthink_worker_batch_rows", "role", legend="{{role}}", qs=(0.95,)),
            ],
            width=8,
        ),
        Panel(
            "Worker jobs by outcome (/s)",
            [
                Target(f"sum by (role, outcome) (rate(atomthink_worker_jobs_total[{RATE}]))", "{{role}} {{outcome}}"),
            ],
            width=8,
        ),
    ]
    variables = [
        query_variable("mode", "label_values(atomthink_solve_requests_total, mode)"),
        query_variable("strategy", "label_values(atomthink_solve_requests_total, strategy)"),
    ]
    return dashboard("atomthink-serve", "AtomThink Serve", items, variables)


def vllm_dashboard() -> dict[str, Any]:
    """vLLM's own metrics, from ``vllm serve`` or from a worker holding vLLM in process."""
    by = "model_name"
    legend = "{{model_name}}"
    items: list[Panel | Row] = [
        Row("Engine load"),
        Panel(
            "KV cache usage",
            [Target(f"max by ({by}) (vllm:kv_cache_usage_perc{{{VLLM}}})", legend)],
            unit="percentunit",
            width=8,
        ),
        Panel(
            "Requests waiting and running",
            [
                Target(f"sum by ({by}) (vllm:num_requests_waiting{{{VLLM}}})", f"{legend} waiting"),
                Target(f"sum by ({by}) (vllm:num_requests_running{{{VLLM}}})", f"{legend} running"),
            ],
            width=8,
        ),
        Panel(
            "Prefix cache hit rate",
            [
                Target(
                    f"sum by ({by}) (rate(vllm:prefix_cache_hits_total{{{VLLM}}}[{RATE}]))"
                    f" / sum by ({by}) (rate(vllm:prefix_cache_queries_total{{{VLLM}}}[{RATE}]))",
                    legend,
                )
            ],
            unit="percentunit",
            width=8,
        ),
        Row("Latency"),
        Panel(
            "Time to first token",
            quantiles("vllm:time_to_first_token_seconds", by, VLLM, legend),
            unit="s",
            width=8,
        ),
        Panel(
            "End-to-end request latency",
            quantiles("vllm:e2e_request_latency_seconds", by, VLLM, legend, qs=(0.5, 0.95)),
            unit="s",
            width=8,
        ),
        Panel(
            "Queue time in the engine",
            quantiles("vllm:request_queue_time_seconds", by, VLLM, legend, qs=(0.5, 0.95)),
            unit="s",
            width=8,
        ),
        Panel(
            "Inter-token latency",
            quantiles("vllm:inter_token_latency_seconds", by, VLLM, legend, qs=(0.5, 0.95)),
            unit="s",
            width=8,
        ),
        Row("Throughput"),
        Panel(
            "Tokens/s",
            [
                Target(f"sum by ({by}) (rate(vllm:prompt_tokens_total{{{VLLM}}}[{RATE}]))", f"{legend} prompt"),
                Target(f"sum by ({by}) (rate(vllm:generation_tokens_total{{{VLLM}}}[{RATE}]))", f"{legend} generated"),
            ],
            width=8,
        ),
        Panel(
            "Candidates per request (n)",
            [
                mean("vllm:request_params_n", by, VLLM, legend),
                *quantiles("vllm:request_params_n", by, VLLM, legend, qs=(0.95,)),
            ],
            width=8,
        ),
    ]
    variables = [query_variable("model_name", "label_values(vllm:num_requests_waiting, model_name)")]
    return dashboard("atomthink-vllm", "AtomThink vLLM", items, variables)


DASHBOARDS = {"atomthink.json": atomthink_dashboard, "vllm.json": vllm_dashboard}


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(panel title, expr)`` for every query of every panel."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def render(expr: str, board: dict[str, Any], *, rate_interval: str = "1m", time_range: str = "5m") -> str:
    """``expr`` as Grafana sends it: template variables at All, ``$__rate_interval`` and ``$__range`` filled in."""
    values = {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": time_range}
    values |= {v["name"]: v.get("allValue", ".*") for v in board.get("templating", {}).get("list", [])}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, expr)


def encode(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = OUT_DIR / name, encode(build())
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run python {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
