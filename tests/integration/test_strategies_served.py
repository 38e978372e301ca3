"""The issue-25 strategies served end to end (a real gateway, real tiny transformers models, both queues): plain and
streamed ``/solve``, their own events, and the OpenAI facade's ``atomthink.strategy`` with ``usage.prompt_tokens``."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import openai
import pytest

from harness.servers import ServerProcess
from tests.sse import SseEvent, read_events

pytestmark = pytest.mark.integration

STRATEGIES: list[dict[str, Any]] = [
    {"strategy": "particle_filter", "candidates": 3, "resampling": "systematic"},
    {"strategy": "dvts", "candidates": 4, "beam_width": 2},
    {"strategy": "deepconf", "candidates": 3, "eta": 70, "top_logprobs": 5},
    {"strategy": "deepconf_online", "candidates": 4, "warmup": 2, "wave_size": 1, "eta": 50},
    {"strategy": "self_certainty", "candidates": 3},
    {"strategy": "self_certainty_vote", "candidates": 3, "borda_power": 1.0},
    {"strategy": "best_of_n", "candidates": 3, "path_sampling": "cot", "aggregation": "last", "score_steps": "last"},
    {"strategy": "majority", "candidates": 3, "path_sampling": "cot"},
]
OWN_EVENTS = {
    "particle_filter": "particles",
    "dvts": "subtrees",
    "deepconf": "confidence",
    "deepconf_online": "confidence",
    "self_certainty": "confidence",
    "self_certainty_vote": "confidence",
    "best_of_n": "selection",
    "majority": "selection",
}
USES_PRM = {"particle_filter", "dvts", "best_of_n"}
VARIABLE = {"id", "timings_ms"}


def _body(sample_png: bytes, fields: dict[str, Any]) -> dict[str, Any]:
    image = "data:image/png;base64," + base64.b64encode(sample_png).decode()
    return {"question": "What is the value of B?", "image": image, "mode": "slow", "max_steps": 3, "seed": 11,
            "return_tree": True, "temperature": 1.2, **fields}  # fmt: skip


def _stream(url: str, body: dict[str, Any]) -> list[SseEvent]:
    with httpx.stream("POST", f"{url}/solve", timeout=180, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return list(read_events(response.iter_lines()))


def _ids(fields: dict[str, Any]) -> str:
    return str(fields["strategy"])


@pytest.mark.parametrize("fields", STRATEGIES, ids=_ids)
def test_streamed_and_plain_solves_agree_and_show_the_strategy(
    gateway: ServerProcess, sample_png: bytes, fields: dict[str, Any]
) -> None:
    name = fields["strategy"]
    body = _body(sample_png, fields)
    events = _stream(gateway.url, body)
    assert events[-1].event == "result", events[-1]
    kinds = [event.event for event in events[:-1]]
    assert {"expansion", "selection", OWN_EVENTS[name]} <= set(kinds)
    assert ("scoring" in kinds) == (name in USES_PRM), "the confidence strategies never call the PRM"
    nodes: dict[int, dict[str, Any]] = {}
    for event in events[:-1]:
        assert event.data["type"] == event.event
        if event.event == "expansion":
            nodes.update({n["id"]: n for n in event.data["nodes"]})
        elif event.event == "confidence":
            assert all(c["id"] in nodes and c["confidence"] > 0 for c in event.data["nodes"])
        elif event.event == "particles":
            assert sum(w["weight"] for w in event.data["weights"]) == pytest.approx(1, abs=1e-4)
            assert len(event.data["drawn"]) == fields["candidates"] and set(event.data["drawn"]) <= set(nodes)
        elif event.event == "subtrees":
            heads = [h for h in event.data["heads"] if h is not None]
            assert len(event.data["heads"]) == fields["candidates"] // fields["beam_width"]
            assert len(set(heads)) == len(heads), "subtrees never share a node"

    result = events[-1].data
    assert result["strategy"] == name and result["mode"] == "slow"
    stats = result["stats"]
    assert stats["prompt_tokens"] > 0 and stats["generated_tokens"] > 0
    assert (stats["prm_calls"] > 0) == (name in USES_PRM)
    if fields.get("path_sampling") == "cot":  # one CoT call samples every path (plus a fallback when none finished)
        assert stats["policy_calls"] == (1 if result["final"] else 2) and stats["paths"] == fields["candidates"]
    if fields.get("score_steps") == "last":  # only the chosen path's last step carries a PRM score
        assert [s["score"] is None for s in result["steps"]] == [True] * (len(result["steps"]) - 1) + [False]
    assert [(n["id"], n["parent"], n["text"]) for n in result["tree"]] == [
        (n["id"], n["parent"], n["text"]) for n in nodes.values()
    ]
    plain = httpx.post(f"{gateway.url}/solve", json=body, timeout=180)
    assert plain.status_code == 200, plain.text
    expected = plain.json()
    assert {k: v for k, v in result.items() if k not in VARIABLE} == {
        k: v for k, v in expected.items() if k not in VARIABLE
    }, "a seeded request replays, streamed or not"


@pytest.mark.parametrize("fields", STRATEGIES, ids=_ids)
def test_openai_facade_runs_the_strategy_and_counts_prompt_tokens(
    gateway: ServerProcess, fields: dict[str, Any]
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=180)
    completion = client.chat.completions.create(
        model="atomthink",
        messages=[{"role": "user", "content": "What is 3 + 4?"}],
        seed=5,
        extra_body={"atomthink": {"mode": "slow", "max_steps": 2, **fields}},
    )
    solve = (completion.model_extra or {})["atomthink"]
    assert solve["strategy"] == fields["strategy"]
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == solve["stats"]["prompt_tokens"] > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_a_field_of_another_strategy_is_a_422_naming_it(gateway: ServerProcess) -> None:
    bad = httpx.post(
        f"{gateway.url}/solve",
        json={"question": "1+1?", "mode": "slow", "strategy": "deepconf", "weight_temperature": 2.0},
        timeout=30,
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "weight_temperature"
    split = httpx.post(
        f"{gateway.url}/solve",
        json={"question": "1+1?", "mode": "slow", "strategy": "dvts", "candidates": 5, "beam_width": 2},
        timeout=30,
    )
    assert split.status_code == 422 and split.json()["error"]["field"] == "beam_width"
    whole = httpx.post(
        f"{gateway.url}/solve",
        json={
            "question": "1+1?",
            "mode": "slow",
            "strategy": "best_of_n",
            "path_sampling": "cot",
            "prune_fraction": 0.5,
        },
        timeout=30,
    )
    assert whole.status_code == 422 and whole.json()["error"]["field"] == "prune_fraction"
