"""Adding a strategy is one module and its tests: this file registers a strategy of its own (PRM-free, with its own
field and its own event) and serves it through ``/solve`` of a real gateway (uvicorn on a free port, the embedded
workers on the memory queue, the tiny transformers models)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from pydantic import Field

from atomthink.settings import Settings
from atomthink_serve.embedded import embedded_runtime
from harness.servers import free_port
from service.app import create_app
from service.events import StrategyEvent
from service.orchestrator.strategies import registry
from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    StrategyParams,
    fallback_answer,
)
from service.orchestrator.strategies.paths import rollouts
from service.orchestrator.tree import SearchTree
from tests.sse import read_events

NAME = "first_finished"


class FirstFinishedParams(StrategyParams):
    """The test strategy's one field."""

    paths: int = Field(2, ge=1, le=8)
    """Whole paths sampled; the first to finish gives the answer."""


class FinishedEvent(StrategyEvent):
    """The strategy's own event: how many of the sampled paths finished."""

    type: Literal["finished"] = "finished"
    finished: int


async def first_finished(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: FirstFinishedParams
) -> SearchOutcome:
    """Sample ``paths`` whole paths (no PRM call); the first finished one answers."""
    leaves, _ = await rollouts(expander, tree, context, params.paths, score=False)
    finished = [leaf for leaf in leaves if leaf.final]
    tree.emit(FinishedEvent(finished=len(finished)))
    if not finished:
        tree.best = leaves[0]
        fallback = await fallback_answer(expander, leaves[0], context)
        return SearchOutcome(fallback.leaf, fallback.answer, final=False, paths=len(leaves))
    tree.best = finished[0]
    return SearchOutcome(finished[0], context.answer_of(finished[0].text), final=True, paths=len(leaves))


STRATEGY: registry.Strategy[FirstFinishedParams] = registry.Strategy(
    name=NAME,
    summary="the first of N whole paths to finish (a test strategy)",
    params=FirstFinishedParams,
    search=first_finished,
    cost=lambda params: params.paths,
    cost_doc="paths",
    uses_prm=False,
    path_level=True,
)


@pytest.fixture(scope="module")
def served(tiny_models: dict[str, Path]) -> Iterator[str]:
    """The strategy registered, and a gateway serving it; both undone afterwards."""
    registry.register(STRATEGY)
    settings = Settings(
        policy_model=str(tiny_models["policy"]),
        prm_model=str(tiny_models["prm"]),
        max_step_tokens=12,
        max_answer_tokens=24,
        torch_threads=1,
        queue="memory",
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(embedded_runtime, settings), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        registry.unregister(NAME)


def _solve(url: str, **fields: Any) -> httpx.Response:
    body = {"question": "What is 2 + 3?", "mode": "slow", "strategy": NAME, "max_steps": 2, "seed": 4, **fields}
    return httpx.post(f"{url}/solve", json=body, timeout=120)


def test_a_strategy_registered_by_a_test_is_served(served: str) -> None:
    response = _solve(served, paths=3, return_tree=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["strategy"] == NAME and body["aggregation"] is None
    assert body["stats"]["prm_calls"] == 0 and body["stats"]["paths"] == 3
    assert len([n for n in body["tree"] if n["parent"] is None]) == 3  # three whole paths were started
    # the same seed replays the same search
    assert _solve(served, paths=3, return_tree=True).json()["tree"] == body["tree"]
    # multipart form fields reach the strategy's own params too
    form = {"question": "What is 2 + 3?", "mode": "slow", "strategy": NAME, "paths": "1", "max_steps": "2"}
    by_form = httpx.post(f"{served}/solve", data=form, timeout=120)
    assert by_form.status_code == 200 and by_form.json()["stats"]["paths"] == 1


def test_its_field_is_checked_against_the_strategy(served: str) -> None:
    too_many = _solve(served, paths=9)
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "paths"
    foreign = _solve(served, beam_width=2)
    assert foreign.status_code == 422 and foreign.json()["error"]["field"] == "beam_width"
    on_beam = _solve(served, strategy="beam", paths=2)
    assert on_beam.status_code == 422 and on_beam.json()["error"]["field"] == "paths"
    spec = httpx.get(f"{served}/openapi.json", timeout=30).json()
    solve = spec["components"]["schemas"]["SolveJsonRequest"]["properties"]
    assert NAME in solve["strategy"]["anyOf"][0]["enum"] and solve["paths"]["maximum"] == 8
    # the app was built after the registration (its modules imported before): the multipart body and the OpenAI
    # facade's atomthink object list the strategy's field too
    content = spec["paths"]["/solve"]["post"]["requestBody"]["content"]
    form = content["multipart/form-data"]["schema"]["properties"]
    assert NAME in form["strategy"]["anyOf"][0]["enum"] and form["paths"]["maximum"] == 8
    assert set(form) == {*solve, "image"}
    assert spec["components"]["schemas"]["AtomThinkOptions"]["properties"]["paths"]["maximum"] == 8


def test_its_own_event_is_streamed(served: str) -> None:
    body = {"question": "What is 2 + 3?", "mode": "slow", "strategy": NAME, "max_steps": 2, "seed": 4, "stream": True}
    with httpx.stream("POST", f"{served}/solve", json=body, timeout=120) as response:
        events = list(read_events(response.iter_lines()))
    names = [e.event for e in events]
    assert "finished" in names and names[-1] == "result"
    finished = next(e.data for e in events if e.event == "finished")
    assert finished["type"] == "finished" and 0 <= finished["finished"] <= 2


def test_openai_facade_takes_its_fields(served: str) -> None:
    request = {
        "model": "atomthink",
        "messages": [{"role": "user", "content": "What is 2 + 3?"}],
        "atomthink": {"mode": "slow", "strategy": NAME, "paths": 2, "max_steps": 2},
        "seed": 1,
    }
    response = httpx.post(f"{served}/v1/chat/completions", json=request, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["atomthink"]["strategy"] == NAME
    request["atomthink"] = {"mode": "slow", "strategy": NAME, "paths": 20}
    refused = httpx.post(f"{served}/v1/chat/completions", json=request, timeout=120)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "atomthink.paths"  # OpenAI says 400
