"""The OpenAI-compatible routes through a real gateway, driven by the official ``openai`` Python client."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import openai
import pytest

from harness.servers import ServerProcess

pytestmark = pytest.mark.integration

QUESTION = "What is the value of B?"

# The README's reasoning_effort list: reasoning_effort -> mode, strategy, candidates, beam width
EFFORTS: dict[str, tuple[str, str | None, int | None, int | None]] = {
    "none": ("direct", None, None, None),
    "minimal": ("cot", None, None, None),
    "low": ("quick", None, None, None),
    "medium": ("slow", "beam", 3, 2),
    "high": ("slow", "beam", 6, 3),
    "xhigh": ("slow", "beam", 8, 4),
}


def _client(gateway: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _messages(image_url: str | None, question: str = QUESTION) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": question}]
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    return [{"role": "system", "content": "You are a careful solver."}, {"role": "user", "content": content}]


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_models_lists_the_served_model(gateway: ServerProcess) -> None:
    assert [model.id for model in _client(gateway).models.list()] == ["atomthink"]


def test_completion_with_an_image_is_the_solve_of_the_same_request(gateway: ServerProcess, sample_png: bytes) -> None:
    completion = _client(gateway).chat.completions.create(
        model="atomthink",
        messages=_messages(_data_url(sample_png)),  # type: ignore[arg-type]
        reasoning_effort="medium",
        seed=7,
        extra_body={"atomthink": {"max_steps": 3}},
    )
    fields = {"question": QUESTION, "image": _data_url(sample_png), "mode": "slow", "candidates": 3, "beam_width": 2,
              "max_steps": 3, "seed": 7}  # fmt: skip
    solve = httpx.post(f"{gateway.url}/solve", json=fields, timeout=120)
    expected = solve.json()
    message = completion.choices[0].message
    extra = message.model_extra or {}
    assert completion.object == "chat.completion" and completion.model == "atomthink"
    assert message.role == "assistant"
    assert message.content == (expected["answer"] or "")
    steps = "\n".join(step["text"] for step in expected["steps"])
    assert extra["reasoning"] == extra["reasoning_content"] == steps
    assert completion.choices[0].finish_reason == ("stop" if expected["final"] else "length")
    atomthink = (completion.model_extra or {})["atomthink"]
    assert atomthink["steps"] == expected["steps"] and atomthink["mode"] == "slow"
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens == expected["stats"]["generated_tokens"]
    assert completion.usage.completion_tokens_details.reasoning_tokens == expected["stats"]["generated_tokens"]


def test_streamed_completion_sends_reasoning_then_content_then_ends(gateway: ServerProcess, sample_png: bytes) -> None:
    client = _client(gateway)
    request: dict[str, Any] = {"model": "atomthink", "messages": _messages(_data_url(sample_png)), "seed": 3,
                               "reasoning_effort": "medium", "extra_body": {"atomthink": {"max_steps": 4}}}  # fmt: skip
    parts: list[tuple[str, str]] = []
    finish: list[str] = []
    usage = None
    for chunk in client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}):
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta.model_extra or {}
            if delta.get("reasoning"):
                assert delta["reasoning_content"] == delta["reasoning"]
                parts.append(("reasoning", delta["reasoning"]))
            if choice.delta.content:
                parts.append(("content", choice.delta.content))
            if choice.finish_reason is not None:
                finish.append(choice.finish_reason)
    plain = client.chat.completions.create(**request)
    kinds = [kind for kind, _ in parts]
    assert kinds.count("reasoning") == len(plain.choices[0].message.model_extra["reasoning"].splitlines()) >= 2
    assert kinds == ["reasoning"] * kinds.count("reasoning") + ["content"] * kinds.count("content")
    assert (
        "".join(text for kind, text in parts if kind == "reasoning")
        == plain.choices[0].message.model_extra["reasoning"]
    )
    assert "".join(text for kind, text in parts if kind == "content") == plain.choices[0].message.content
    assert finish == [plain.choices[0].finish_reason]
    assert usage is not None and plain.usage is not None
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_stream_is_sse_ending_with_done(gateway: ServerProcess) -> None:
    body = {"model": "atomthink", "messages": [{"role": "user", "content": "1+1?"}], "reasoning_effort": "low",
            "stream": True, "seed": 1, "atomthink": {"max_steps": 2}}  # fmt: skip
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line for line in response.iter_lines() if line.startswith("data:")]
    assert data[-1] == "data: [DONE]"


@pytest.mark.parametrize("effort", list(EFFORTS))
def test_every_reasoning_effort_maps_as_documented(gateway: ServerProcess, effort: str) -> None:
    mode, strategy, candidates, beam_width = EFFORTS[effort]
    completion = _client(gateway).chat.completions.create(
        model="atomthink",
        messages=_messages(None),  # type: ignore[arg-type]
        reasoning_effort=effort,  # type: ignore[arg-type]
        seed=2,
        extra_body={"atomthink": {"max_steps": 2, "return_tree": True}},
    )
    solve = (completion.model_extra or {})["atomthink"]
    assert (solve["mode"], solve["strategy"]) == (mode, strategy)
    if candidates is not None:
        tree = solve["tree"]
        first_steps = [node for node in tree if node["parent"] is None]
        assert len(first_steps) == candidates
        kept = {node["parent"] for node in tree if node["depth"] == 2}
        if kept:  # no first step was final
            assert len(kept) == beam_width


def test_atomthink_knobs_override_the_effort(gateway: ServerProcess) -> None:
    completion = _client(gateway).chat.completions.create(
        model="atomthink",
        messages=_messages(None),  # type: ignore[arg-type]
        seed=2,
        extra_body={
            "atomthink": {"mode": "slow", "strategy": "majority", "candidates": 2, "max_steps": 2, "return_tree": True}
        },  # fmt: skip
    )
    solve = (completion.model_extra or {})["atomthink"]
    assert (solve["mode"], solve["strategy"]) == ("slow", "majority")
    assert len([node for node in solve["tree"] if node["parent"] is None]) == 2, "two sampled paths"


def test_allowed_host_image_url_is_fetched(gateway: ServerProcess, sample_png: bytes) -> None:
    example = httpx.get(f"{gateway.url}/static/example.png").content
    client = _client(gateway)
    by_url = client.chat.completions.create(
        model="atomthink", messages=_messages(f"{gateway.url}/static/example.png"),  # type: ignore[arg-type]
        reasoning_effort="low", seed=5,
    )  # fmt: skip
    by_data = client.chat.completions.create(
        model="atomthink", messages=_messages(_data_url(example)),  # type: ignore[arg-type]
        reasoning_effort="low", seed=5,
    )  # fmt: skip
    assert by_url.choices[0].message.model_extra == by_data.choices[0].message.model_extra


@pytest.mark.parametrize(
    ("request_fields", "param", "code"),
    [
        ({"extra_body": {"atomthink": {"candidates": 0}}}, "atomthink.candidates", "invalid_request"),
        ({"extra_body": {"atomthink": {"beam": 2}}}, "atomthink.beam", "invalid_request"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", "invalid_request"),
        (
            {"reasoning_effort": "low", "extra_body": {"atomthink": {"mode": "slow"}}},
            "atomthink.mode",
            "invalid_request",
        ),  # fmt: skip
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/figure.png"}},
                            {"type": "text", "text": "x?"},
                        ],
                    }
                ]
            },
            "messages.0.content.0.image_url.url",
            "invalid_request",
        ),  # fmt: skip
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x?"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        ],
                    }
                ]
            },
            "messages.0.content.1.image_url.url",
            "invalid_image",
        ),  # fmt: skip
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages", "invalid_request"),
        ({"n": 2}, "n", "invalid_request"),
    ],
)
def test_bad_request_is_a_typed_openai_error(
    gateway: ServerProcess, request_fields: dict[str, Any], param: str, code: str
) -> None:
    request: dict[str, Any] = {"model": "atomthink", "messages": _messages(None), **request_fields}
    with pytest.raises(openai.BadRequestError) as raised:
        _client(gateway).chat.completions.create(**request)
    error = raised.value
    assert error.status_code == 400
    assert error.code == code and error.param == param and error.type == "invalid_request_error"
    assert isinstance(error.body, dict) and error.body["message"]


def test_unknown_model_is_not_found(gateway: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        _client(gateway).chat.completions.create(model="gpt-4o", messages=_messages(None))  # type: ignore[arg-type]
    assert raised.value.code == "model_not_found" and raised.value.param == "model"


def test_max_completion_tokens_is_the_thinking_budget(gateway: ServerProcess) -> None:
    completion = _client(gateway).chat.completions.create(
        model="atomthink",
        messages=_messages(None),  # type: ignore[arg-type]
        reasoning_effort="medium",
        seed=3,
        max_completion_tokens=1,
    )
    solve = (completion.model_extra or {})["atomthink"]
    assert solve["truncated"] is True
    assert solve["stats"]["policy_calls"] == 1  # the budget ran out after the first round of calls
