"""``POST /solve`` streamed as Server-Sent Events through a real gateway, over both queues."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from harness.servers import ServerProcess
from tests.conftest import TEST_REDIS_URL, delete_prefix, model_env, queue_env
from tests.sse import SseEvent, read_events

pytestmark = pytest.mark.integration

MODES: list[dict[str, Any]] = [
    {"mode": "direct"},
    {"mode": "cot"},
    {"mode": "quick"},
    {"mode": "slow", "strategy": "beam", "candidates": 3, "beam_width": 2},
    {"mode": "slow", "strategy": "greedy", "candidates": 2},
    {"mode": "slow", "strategy": "best_of_n", "candidates": 3},
    {"mode": "slow", "strategy": "majority", "candidates": 3},
    {"mode": "slow", "strategy": "weighted_majority", "candidates": 3},
]
SEARCH_EVENTS = {"expansion", "scoring", "selection"}
VARIABLE = {"id", "timings_ms"}  # a new request id and new wall times on every run


def _body(sample_png: bytes, fields: dict[str, Any]) -> dict[str, Any]:
    image = "data:image/png;base64," + base64.b64encode(sample_png).decode()
    return {"question": "What is the value of B?", "image": image, "max_steps": 3, "seed": 21, "return_tree": True,
            "temperature": 1.2, **fields}  # fmt: skip


def _stream(url: str, body: dict[str, Any], **kwargs: Any) -> list[SseEvent]:
    with httpx.stream("POST", f"{url}/solve", timeout=120, **kwargs, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(read_events(response.iter_lines()))


def _ancestors(nodes: dict[int, dict[str, Any]], node_id: int | None) -> list[int]:
    path = []
    while node_id is not None:
        path.append(node_id)
        node_id = nodes[node_id]["parent"]
    return path


def check_consistent(events: list[SseEvent]) -> dict[int, dict[str, Any]]:
    """Every id an event names was expanded before, parents come first, best paths are chains; returns the nodes."""
    nodes: dict[int, dict[str, Any]] = {}
    for event in events[:-1]:
        assert event.event in SEARCH_EVENTS, event
        assert event.data["type"] == event.event
        if event.event == "expansion":
            for node in event.data["nodes"]:
                assert node["id"] == len(nodes) + 1, "ids count up from 1 in expansion order"
                assert node["parent"] is None or node["parent"] in nodes
                expected_depth = 1 if node["parent"] is None else nodes[node["parent"]]["depth"] + 1
                assert node["depth"] == expected_depth
                nodes[node["id"]] = node
        elif event.event == "scoring":
            assert event.data["scores"]
            for score in event.data["scores"]:
                assert score["id"] in nodes and 0 <= score["score"] <= 1
        else:
            assert all(node_id in nodes for node_id in event.data["kept"])
            path = event.data["best_path"]
            assert path and nodes[path[0]]["parent"] is None
            assert all(nodes[child]["parent"] == parent for parent, child in zip(path, path[1:], strict=False))
            live = {ancestor for node_id in event.data["kept"] for ancestor in _ancestors(nodes, node_id)}
            assert path[-1] in live, "the best node is kept, or an ancestor of a kept node"
    return nodes


@pytest.mark.parametrize("fields", MODES, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_stream_of_each_mode_parses_and_ends_with_the_plain_response(
    gateway: ServerProcess, sample_png: bytes, fields: dict[str, Any]
) -> None:
    body = _body(sample_png, fields)
    events = _stream(gateway.url, {**body, "stream": True})
    assert events[-1].event == "result"
    nodes = check_consistent(events)
    kinds = {event.event for event in events}
    assert {"expansion", "selection"} <= kinds
    calls_prm = fields["mode"] == "slow" and fields["strategy"] != "majority"  # a plain vote needs no scores
    assert ("scoring" in kinds) == calls_prm

    result = events[-1].data
    plain = httpx.post(f"{gateway.url}/solve", json=body, timeout=120)
    assert plain.status_code == 200, plain.text
    expected = plain.json()
    assert result.keys() == expected.keys()
    assert {k: v for k, v in result.items() if k not in VARIABLE} == {
        k: v for k, v in expected.items() if k not in VARIABLE
    }
    # the streamed tree is the response's tree, and the answer's steps are the last best path
    assert [(n["id"], n["parent"], n["text"]) for n in result["tree"]] == [
        (n["id"], n["parent"], n["text"]) for n in nodes.values()
    ]
    last_selection = next(e for e in reversed(events) if e.event == "selection")
    assert [step["text"] for step in result["steps"]] == [nodes[i]["text"] for i in last_selection.data["best_path"]]
    scores = {s["id"]: s["score"] for e in events if e.event == "scoring" for s in e.data["scores"]}
    if calls_prm:
        assert [step["score"] for step in result["steps"]][-1] == scores[last_selection.data["best_path"][-1]]


def test_beam_events_show_candidates_scores_and_kept_beams(gateway: ServerProcess, sample_png: bytes) -> None:
    events = _stream(gateway.url, _body(sample_png, {"mode": "slow", "candidates": 3, "beam_width": 2, "stream": True}))
    nodes = check_consistent(events)
    first_scoring = next(e for e in events if e.event == "scoring")
    first_selection = next(e for e in events if e.event == "selection")
    roots = [n for n in nodes.values() if n["parent"] is None]
    assert len(roots) == 3, "three candidates at the first step"
    scored = {s["id"]: s["score"] for s in first_scoring.data["scores"]}
    assert set(scored) <= {n["id"] for n in roots}
    kept = first_selection.data["kept"]
    assert len(kept) == 2 and set(kept) <= set(scored), "the two best scored candidates are kept"
    assert min(scored[k] for k in kept) >= max(v for k, v in scored.items() if k not in kept)


def test_accept_header_selects_the_stream_for_multipart(gateway: ServerProcess, sample_png: bytes) -> None:
    data = {"question": "What is x?", "mode": "quick", "max_steps": "2", "seed": "4"}
    files = {"image": ("figure.png", sample_png, "image/png")}
    with httpx.stream("POST", f"{gateway.url}/solve", data=data, files=files,
                      headers={"Accept": "text/event-stream"}, timeout=60) as response:  # fmt: skip
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response.iter_lines()))
    assert events[-1].event == "result"
    check_consistent(events)
    plain = httpx.post(f"{gateway.url}/solve", data=data, files=files, timeout=60).json()
    assert events[-1].data["steps"] == plain["steps"]


def test_bad_streamed_request_is_a_plain_4xx(gateway: ServerProcess) -> None:
    response = httpx.post(f"{gateway.url}/solve", json={"question": "", "stream": True}, timeout=30)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "question"


def test_failure_mid_stream_is_a_typed_error_event_after_keepalives(redis_prefix: str, tmp_path: Path) -> None:
    """A gateway without workers: the job times out after the stream started, with keep-alives meanwhile."""
    env = {**queue_env("redis", redis_prefix), "ATOMTHINK_JOB_TIMEOUT_S": "1.5", "ATOMTHINK_STREAM_KEEPALIVE_S": "0.3"}
    try:
        with ServerProcess(["gateway"], env, ready_path="/healthz", log_path=tmp_path / "gateway.log") as server:
            events = _stream(server.url, {"question": "1+1?", "mode": "quick", "stream": True})
            # the OpenAI route: the same failure as OpenAI's error shape, in the stream and as a 503
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
            request: dict[str, Any] = {"model": "atomthink", "messages": [{"role": "user", "content": "1+1?"}],
                                       "reasoning_effort": "low"}  # fmt: skip
            with pytest.raises(openai.APIError) as streamed:
                for _ in client.chat.completions.create(**request, stream=True):
                    pass
            with pytest.raises(openai.InternalServerError) as plain:
                client.chat.completions.create(**request)
    finally:
        delete_prefix(TEST_REDIS_URL, redis_prefix)
    assert streamed.value.code == plain.value.code == "job_timeout"
    assert plain.value.status_code == 503 and plain.value.type == "server_error"
    assert [e.event for e in events] == ["error"]
    assert events[0].data == {
        "error": {"code": "job_timeout", "message": "no policy worker answered within 2 s", "field": None}
    }
    assert events[0].comments.count("keep-alive") >= 3


def _metric(url: str, line_prefix: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_prefix))


@pytest.mark.parametrize("queue", ["memory", "redis"])
def test_disconnect_mid_stream_cancels_the_queued_jobs(
    queue: str, tiny_models: dict[str, Path], redis_prefix: str, tmp_path: Path
) -> None:
    # one policy job per model call: of eight lockstep paths, seven jobs wait in the queue at any time
    # one slot: the request after the disconnect is admitted only if the stream gave its slot back
    env = model_env(tiny_models, **queue_env(queue, redis_prefix), ATOMTHINK_POLICY_BATCH_SIZE="1",
                    ATOMTHINK_MAX_STEP_TOKENS="24", ATOMTHINK_MAX_IN_FLIGHT="1")  # fmt: skip
    body = {"question": "Perimeter?", "mode": "slow", "strategy": "best_of_n", "candidates": 8, "max_steps": 50,
            "seed": 1, "stream": True}  # fmt: skip
    with ServerProcess(["serve"], env, log_path=tmp_path / "gateway.log") as server:
        cancelled = 'atomthink_worker_jobs_total{outcome="cancelled",role="policy"}'
        assert _metric(server.url, cancelled) == 0
        with httpx.stream("POST", f"{server.url}/solve", json=body, timeout=60) as response:
            seen = 0
            for event in read_events(response.iter_lines()):
                seen += event.event == "expansion"
                if seen >= 10:
                    break  # leaving the block closes the connection mid-stream
        assert seen >= 10
        ok = 'atomthink_solve_requests_total{mode="slow",status="ok"'
        status = 'atomthink_solve_requests_total{mode="slow",status="cancelled"'
        for _ in range(100):
            if _metric(server.url, status) >= 1 and _metric(server.url, cancelled) >= 1:
                break
            httpx.get(f"{server.url}/healthz")
            time.sleep(0.1)
        else:
            pytest.fail("the disconnected stream's search or jobs were never cancelled")
        assert _metric(server.url, ok) == 0, "the search did not run to the end"
        assert _metric(server.url, "atomthink_in_flight_requests") == 0
        after = httpx.post(f"{server.url}/solve", json={"question": "1+1?", "mode": "direct"}, timeout=30)
        assert after.status_code == 200


def test_openapi_documents_the_stream_and_the_openai_routes(gateway: ServerProcess) -> None:
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    solve_ok = spec["paths"]["/solve"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= solve_ok.keys()
    events = [ref["$ref"].rsplit("/", 1)[1] for ref in solve_ok["text/event-stream"]["schema"]["oneOf"]]
    assert events == ["ExpansionEvent", "ScoringEvent", "SelectionEvent", "SolveResponse", "ErrorResponse"]
    assert all(name in schemas for name in events)
    assert "stream" in schemas["SolveJsonRequest"]["properties"]
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    assert {"application/json", "text/event-stream"} <= chat["responses"]["200"]["content"].keys()
    assert chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
    assert "reasoning_effort" in schemas["ChatCompletionRequest"]["properties"]
    assert "atomthink" in schemas["ChatCompletionRequest"]["properties"]
    assert "ChatCompletionChunk" in schemas and "ChatCompletion" in schemas
    assert "get" in spec["paths"]["/v1/models"]
