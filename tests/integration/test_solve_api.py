"""``POST /solve`` through a real gateway process (uvicorn on a free port) with real transformers models."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from harness.servers import ServerProcess

pytestmark = pytest.mark.integration

MODES: list[dict[str, Any]] = [
    {"mode": "direct"},
    {"mode": "cot"},
    {"mode": "quick"},
    {"mode": "slow"},
    {"mode": "slow", "strategy": "beam", "candidates": 3, "beam_width": 2},
    {"mode": "slow", "strategy": "greedy", "candidates": 2},
    {"mode": "slow", "strategy": "best_of_n", "candidates": 4, "aggregation": "mean"},
    {"mode": "slow", "strategy": "majority", "candidates": 4},
    {"mode": "slow", "strategy": "majority", "candidates": 4, "tie_break": "prm"},
    {"mode": "slow", "strategy": "weighted_majority", "candidates": 4},
    {"mode": "slow", "strategy": "majority", "candidates": 8, "adaptive": True, "min_candidates": 2},
    {"mode": "slow", "strategy": "weighted_majority", "candidates": 6, "adaptive": True, "stop_share": 0.5},
    {"mode": "slow", "strategy": "best_of_n", "candidates": 4, "prune_fraction": 0.5, "prune_interval": 1},
]
RESPONSE_FIELDS = {"id", "answer", "steps", "mode", "strategy", "stats", "timings_ms", "truncated"}
PATH_FIELDS = {"paths", "paths_ceiling", "paths_saved", "paths_pruned", "tokens_saved", "stop_reason"}
STATS_FIELDS = {"policy_calls", "prm_calls", "generated_tokens", "prompt_tokens", "expanded_nodes", *PATH_FIELDS}


def _solve(gateway: ServerProcess, fields: dict[str, Any], image: bytes | None) -> httpx.Response:
    data = {k: str(v) for k, v in fields.items()}
    files = {"image": ("figure.png", image, "image/png")} if image is not None else None
    return httpx.post(f"{gateway.url}/solve", data=data, files=files, timeout=120)


@pytest.mark.parametrize("fields", MODES, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_every_mode_and_strategy_answers(gateway: ServerProcess, sample_png: bytes, fields: dict[str, Any]) -> None:
    response = _solve(gateway, {"question": "What is the value of B?", "max_steps": 3, "seed": 11, **fields},
                      sample_png)  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.keys() >= RESPONSE_FIELDS
    assert body["mode"] == fields["mode"]
    assert body["steps"], "a solution has at least one step"
    assert set(body["stats"]) == STATS_FIELDS
    _check_spend(fields, body["stats"])
    timings = body["timings_ms"]
    assert set(timings) == {"total", "policy", "prm", "queue", "queue_wall"}
    assert 0 <= timings["queue_wall"] <= timings["queue"] + 1e-3, "the union of the waits is at most their sum"
    assert body["stats"]["policy_calls"] >= 1 and body["stats"]["generated_tokens"] >= 1
    assert body["stats"]["prompt_tokens"] >= 1, "the workers count the prompts the policy read"
    if fields.get("strategy") == "majority" and "tie_break" not in fields:
        # a plain vote (adaptive or not) needs no PRM (OpenR): no PRM job at all, no step scores
        assert body["stats"]["prm_calls"] == 0 and body["timings_ms"]["prm"] == 0
        assert all(step["score"] is None for step in body["steps"])
    elif fields["mode"] == "slow":
        assert body["strategy"] == fields.get("strategy", "beam")
        assert body["stats"]["prm_calls"] >= 1
        assert all(isinstance(step["score"], float) and 0 <= step["score"] <= 1 for step in body["steps"])
        if body["strategy"] == "weighted_majority" and body["final"]:
            assert body["vote_weights"].keys() == body["votes"].keys()
            assert body["vote_weights"][body["answer"]] == max(body["vote_weights"].values())
    else:
        assert body["strategy"] is None and body["stats"]["prm_calls"] == 0
        assert all(step["score"] is None for step in body["steps"])


def _check_spend(fields: dict[str, Any], stats: dict[str, Any]) -> None:
    """Paths spent and saved against the ceiling, for path-level strategies only."""
    if fields.get("strategy") not in ("best_of_n", "majority", "weighted_majority"):
        assert all(stats[k] is None for k in PATH_FIELDS)
        return
    ceiling = fields["candidates"]
    assert stats["paths_ceiling"] == ceiling and stats["paths"] + stats["paths_saved"] == ceiling
    assert stats["stop_reason"] in (("safe", "certain", "ceiling") if fields.get("adaptive") else (None,))
    if not fields.get("adaptive"):
        assert stats["paths"] == ceiling and stats["paths_saved"] == 0
    if stats["paths_saved"] == 0 and stats["paths_pruned"] == 0:
        assert stats["tokens_saved"] == 0
    if stats["paths_saved"]:
        assert stats["tokens_saved"] > 0


def test_same_seed_same_answer(gateway: ServerProcess, sample_png: bytes) -> None:
    fields = {
        "question": "How long is side c?",
        "mode": "slow",
        "strategy": "beam",
        "max_steps": 3,
        "seed": 5,
    }
    first, second = (_solve(gateway, fields, sample_png).json() for _ in range(2))
    assert first["answer"] == second["answer"]
    assert first["steps"] == second["steps"]
    other = _solve(gateway, {**fields, "seed": 6}, sample_png).json()
    assert other["steps"] != first["steps"], "a different seed samples different steps"


def test_json_body_with_data_url_and_plain_base64(gateway: ServerProcess, sample_png: bytes) -> None:
    encoded = base64.b64encode(sample_png).decode()
    body = {"question": "What is x?", "mode": "quick", "max_steps": 2, "seed": 1}
    by_url = httpx.post(f"{gateway.url}/solve", json={**body, "image": f"data:image/png;base64,{encoded}"}, timeout=60)
    plain = httpx.post(f"{gateway.url}/solve", json={**body, "image": encoded}, timeout=60)
    multipart = _solve(gateway, body, sample_png)
    assert by_url.status_code == plain.status_code == multipart.status_code == 200
    assert by_url.json()["steps"] == plain.json()["steps"] == multipart.json()["steps"]


def test_text_only_question_and_choices(gateway: ServerProcess) -> None:
    response = httpx.post(
        f"{gateway.url}/solve",
        json={"question": "Which is larger?", "choices": ["3", "5"], "mode": "direct", "seed": 2},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    multipart = httpx.post(
        f"{gateway.url}/solve",
        data={"question": "Which is larger?", "choices": ["3", "5"], "mode": "direct", "seed": "2"},
        timeout=60,
    )
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["steps"] == response.json()["steps"]


def test_return_tree_lists_every_expanded_node(gateway: ServerProcess, sample_png: bytes) -> None:
    fields = {"question": "Area?", "mode": "slow", "candidates": 2, "beam_width": 2, "max_steps": 2,
              "seed": 3, "return_tree": "true"}  # fmt: skip
    body = _solve(gateway, fields, sample_png).json()
    tree = body["tree"]
    assert len(tree) == body["stats"]["expanded_nodes"]
    ids = {node["id"] for node in tree}
    assert all(node["parent"] is None or node["parent"] in ids for node in tree)
    assert sum(node["parent"] is None for node in tree) == 2  # two candidates at the root
    scored = [node for node in tree if node["score"] is not None]
    assert scored, "PRM scores are recorded on the tree"


def test_deadline_returns_best_so_far_flagged_truncated(gateway: ServerProcess, sample_png: bytes) -> None:
    fields = {"question": "Perimeter?", "mode": "slow", "strategy": "best_of_n", "candidates": 8,
              "max_steps": 20, "deadline_ms": 300, "seed": 4}  # fmt: skip
    response = _solve(gateway, fields, sample_png)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["truncated"] is True
    assert body["timings_ms"]["total"] < 5000


@pytest.mark.parametrize(
    "fields",
    [{"mode": "quick"}, {"mode": "slow", "strategy": "beam"}, {"mode": "slow", "strategy": "weighted_majority"}],
    ids=["quick", "beam", "weighted_majority"],
)
def test_thinking_token_budget_returns_best_so_far_flagged_truncated(
    gateway: ServerProcess, sample_png: bytes, fields: dict[str, Any]
) -> None:
    base = {"question": "Perimeter?", "max_steps": 20, "seed": 4, "temperature": 1.6, **fields}
    free = _solve(gateway, base, sample_png).json()
    budget = 8  # less than one full solution of the tiny policy at any temperature
    body = _solve(gateway, {**base, "max_thinking_tokens": budget}, sample_png).json()
    assert free["truncated"] is False and body["truncated"] is True
    assert body["stats"]["generated_tokens"] >= budget  # it stopped because the budget was spent ...
    assert body["stats"]["policy_calls"] < free["stats"]["policy_calls"]  # ... before the search was done
    assert body["steps"], "the best path so far comes back"


def test_health_readiness_and_openapi(gateway: ServerProcess) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] == {"policy": 1, "prm": 1}
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    body = spec["paths"]["/solve"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= body.keys()
    assert "SolveJsonRequest" in spec["components"]["schemas"]
    # the multipart body lists every field the JSON body has (the image as a file instead of a string)
    form = body["multipart/form-data"]["schema"]["properties"]
    assert set(form) == set(spec["components"]["schemas"]["SolveJsonRequest"]["properties"])
    assert form["image"]["format"] == "binary" and {"adaptive", "prune_fraction", "top_k"} <= set(form)


def test_metrics_show_latency_by_candidate_count(gateway: ServerProcess, sample_png: bytes) -> None:
    fields = {"question": "Sum?", "mode": "slow", "candidates": 4, "max_steps": 2, "seed": 9}
    assert _solve(gateway, fields, sample_png).status_code == 200
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'atomthink_solve_latency_seconds_bucket{candidates="4",le="0.05",mode="slow",strategy="beam"}' in text
    assert 'atomthink_solve_requests_total{mode="slow",status="ok",strategy="beam"}' in text
    assert "atomthink_worker_batch_jobs_bucket" in text
    assert "atomthink_in_flight_requests" in text
    # tokens per solve by candidate count, and paths spent and saved
    assert 'atomthink_solve_generated_tokens_bucket{candidates="4",le="16.0",mode="slow",strategy="beam"}' in text
    assert 'atomthink_saved_paths_total{mode="slow",strategy="majority"}' in text


def test_metrics_count_paths_spent_and_saved(gateway: ServerProcess, sample_png: bytes) -> None:
    def counters() -> dict[str, float]:
        wanted = ("atomthink_solve_paths_total", "atomthink_saved_paths_total", "atomthink_saved_tokens_total")
        values = {}
        for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
            name = line.split("{")[0]
            if name in wanted and 'strategy="majority"' in line:
                values[name] = float(line.rsplit(" ", 1)[1])
        return values

    before = counters()
    fields = {"question": "Sum?", "mode": "slow", "strategy": "majority", "candidates": 4, "adaptive": True,
              "min_candidates": 2, "max_steps": 3, "seed": 3}  # fmt: skip
    stats = _solve(gateway, fields, sample_png).json()["stats"]
    after = counters()
    assert stats["paths"] >= 2 and stats["paths"] + stats["paths_saved"] == 4
    assert after["atomthink_solve_paths_total"] - before["atomthink_solve_paths_total"] == stats["paths"]
    assert after["atomthink_saved_paths_total"] - before["atomthink_saved_paths_total"] == stats["paths_saved"]
    assert after["atomthink_saved_tokens_total"] - before["atomthink_saved_tokens_total"] == stats["tokens_saved"]
