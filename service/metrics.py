"""Prometheus metrics of the gateway (prefix ``atomthink_``), defined once with fixed, low-cardinality labels."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from service.orchestrator.strategies import registry
from service.schemas import PATH_LEVEL_STRATEGIES, Mode, Stats

CANDIDATE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SOLVE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 600)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)

SOLVE_REQUESTS = Counter("atomthink_solve_requests_total", "Solve requests by outcome", ["mode", "strategy", "status"])
SOLVE_LATENCY = Histogram(
    "atomthink_solve_latency_seconds",
    "End-to-end solve latency",
    ["mode", "strategy", "candidates"],
    buckets=SOLVE_BUCKETS,
)
JOB_LATENCY = Histogram(
    "atomthink_job_latency_seconds",
    "Policy or PRM job latency seen by the orchestrator (enqueue to result)",
    ["role"],
    buckets=CALL_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "atomthink_queue_wait_seconds",
    "Enqueue to pick-up, reported by the worker",
    ["role"],
    buckets=CALL_BUCKETS,
)
JOB_BATCH_SIZE = Histogram(
    "atomthink_job_batch_size",
    "Jobs in the worker batch that served a job",
    ["role"],
    buckets=CANDIDATE_BUCKETS,
)
GENERATED_TOKENS = Counter("atomthink_generated_tokens_total", "Tokens generated for solve requests", ["mode"])
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
SOLVE_TOKENS = Histogram(
    "atomthink_solve_generated_tokens",
    "Tokens generated per solve, by candidate count (the ceiling for adaptive votes)",
    ["mode", "strategy", "candidates"],
    buckets=TOKEN_BUCKETS,
)
SOLVE_PATHS = Counter(
    "atomthink_solve_paths_total", "Whole paths sampled by path-level strategies", ["mode", "strategy"]
)
SAVED_PATHS = Counter(
    "atomthink_saved_paths_total",
    "Paths not sampled against the candidate ceiling (adaptive votes) or stopped early (pruned best-of-N)",
    ["mode", "strategy"],
)
SAVED_TOKENS = Counter(
    "atomthink_saved_tokens_total",
    "Estimated tokens not generated against the candidate ceiling (stats.tokens_saved)",
    ["mode", "strategy"],
)
EXPANDED_NODES = Histogram(
    "atomthink_expanded_nodes",
    "Search-tree nodes expanded per request",
    ["mode", "strategy"],
    buckets=COUNT_BUCKETS,
)
IN_FLIGHT = Gauge("atomthink_in_flight_requests", "Solve requests being served")
REJECTED = Counter("atomthink_rejected_requests_total", "Requests refused before solving", ["reason"])
KEY_REQUESTS = Counter("atomthink_key_requests_total", "Requests admitted, by API key name (never the key)", ["key"])
KEY_CANDIDATES = Counter(
    "atomthink_key_candidates_total", "Candidates per step asked for by admitted requests, by API key name", ["key"]
)
KEY_RUNNING = Gauge("atomthink_key_running_requests", "Requests running in this gateway, by API key name", ["key"])
QUOTA_REJECTIONS = Counter(
    "atomthink_quota_rejections_total", "Requests refused by a quota, by API key name and quota", ["key", "quota"]
)


def observe_spend(mode: str, strategy: str | None, candidates: int, stats: Stats) -> None:
    """Count what one solve spent (tokens, paths) and what it saved against its candidate ceiling."""
    label = strategy or "none"
    GENERATED_TOKENS.labels(mode).inc(stats.generated_tokens)
    SOLVE_TOKENS.labels(mode, label, candidate_bucket(candidates)).observe(stats.generated_tokens)
    if stats.paths is not None:
        SOLVE_PATHS.labels(mode, label).inc(stats.paths)
        SAVED_PATHS.labels(mode, label).inc((stats.paths_saved or 0) + (stats.paths_pruned or 0))
        SAVED_TOKENS.labels(mode, label).inc(stats.tokens_saved or 0)


def candidate_bucket(candidates: int) -> str:
    """Label value for a candidate count: the smallest bucket in 1, 2, 4, ..., 64 that holds it."""
    return str(next(b for b in CANDIDATE_BUCKETS if candidates <= b))


MODE_STRATEGIES = [(mode, "none") for mode in get_args(Mode) if mode != "slow"] + [
    ("slow", strategy) for strategy in registry.names("slow")
]
"""Every (mode, strategy) label pair: the slow strategies are the registry's."""


def _export_zeros() -> None:
    """Create every fixed-label series at start-up, so Prometheus scrapes a zero before the first event and rate()
    panels see the first solve as an increase (a series born with its first observation shows none)."""
    for reason in (
        "invalid_request",
        "invalid_image",
        "image_too_large",
        "unsupported_media_type",
        "overloaded",
        "unauthorized",
        "quota_exceeded",
        "context_length_exceeded",
    ):
        REJECTED.labels(reason)
    for role in ("policy", "prm"):
        for histogram in (JOB_LATENCY, QUEUE_WAIT, JOB_BATCH_SIZE):
            histogram.labels(role)
    for mode, strategy in MODE_STRATEGIES:
        EXPANDED_NODES.labels(mode, strategy)
        GENERATED_TOKENS.labels(mode)
        for status in ("ok", "truncated", "cancelled"):
            SOLVE_REQUESTS.labels(mode, strategy, status)
        for bucket in (1,) if mode != "slow" else CANDIDATE_BUCKETS:
            SOLVE_LATENCY.labels(mode, strategy, str(bucket))
            SOLVE_TOKENS.labels(mode, strategy, str(bucket))
    for strategy in PATH_LEVEL_STRATEGIES:
        for counter in (SOLVE_PATHS, SAVED_PATHS, SAVED_TOKENS):
            counter.labels("slow", strategy)


_export_zeros()


PRM_PATHS_MERGED = Counter(
    "atomthink_prm_paths_merged_total", "Paths left out of PRM jobs because an identical path was in the same job"
)
