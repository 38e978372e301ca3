"""The vLLM and OpenAI-compatible backends' pure parts: engine arguments, prompts, sampling parameters, payloads and
the mapping of outputs back to candidates. vLLM is not installed here; a stand-in module checks the engine calls."""

from __future__ import annotations

import enum
import math
import sys
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from atomthink.prm_format import QWEN_PRM
from atomthink.prompts import TINY
from atomthink.protocol import SamplingParams
from atomthink.settings import Settings
from research.modeling.tiny import char_tokenizer
from workers.backends.base import GenerationRequest
from workers.backends.openai_policy import DataUrlCache, candidates_from_response, chat_request
from workers.backends.openai_prm import (
    completion_request,
    pooling_request,
    scores_from_completions,
    scores_from_pooling,
)
from workers.backends.openai_wire import ChatCompletionResponse, CompletionResponse, PoolingResponse
from workers.backends.registry import load_policy, load_prm
from workers.backends.remote import RemoteError, server_root
from workers.backends.vllm_policy import (
    SEED_STRIDE,
    VllmPolicy,
    build_prompt,
    candidate_from_output,
    engine_kwargs,
    render_prompt_text,
    sampling_kwargs,
)

IMAGE = Image.new("RGB", (8, 8), "white")


def request(kind: str = "step", n: int = 3, seed: int = 7, image: Image.Image | None = IMAGE) -> GenerationRequest:
    sampling = SamplingParams(n=n, seed=seed, temperature=0.8, top_p=0.95, top_k=0, max_new_tokens=16)
    return GenerationRequest(kind, "What is x?", ["x is 2.", "so 2x is 4."], image, sampling)  # type: ignore[arg-type]


@dataclass
class FakeCompletion:
    """The fields of ``vllm.CompletionOutput`` the backend reads."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class FakeRequestOutput:
    outputs: list[FakeCompletion] = field(default_factory=list)
    prompt_token_ids: list[int] | None = None


def test_engine_args_from_settings() -> None:
    settings = Settings(
        policy_model="/models/atomthink-llava",
        vllm_gpu_memory_utilization=0.5,
        vllm_max_model_len=4096,
        dtype="bfloat16",
    )
    kwargs = engine_kwargs(settings)
    assert kwargs["model"] == "/models/atomthink-llava"
    assert kwargs["gpu_memory_utilization"] == 0.5 and kwargs["max_model_len"] == 4096
    assert kwargs["limit_mm_per_prompt"] == {"image": 1}
    assert kwargs["enable_prefix_caching"] is True and kwargs["dtype"] == "bfloat16"
    text_only = engine_kwargs(settings.model_copy(update={"vllm_max_model_len": None}), multimodal=False)
    assert "limit_mm_per_prompt" not in text_only and "max_model_len" not in text_only


def test_prompt_has_the_image_placeholder_and_multi_modal_data() -> None:
    tokenizer = char_tokenizer()
    text = render_prompt_text(tokenizer, TINY, request(), multimodal=True)
    assert text.startswith("<|user|><image>[step] What is x?\nx is 2.\nso 2x is 4.") and text.endswith("<|assistant|>")
    prompt = build_prompt(text, request(), multimodal=True)
    assert prompt["prompt"] == text and prompt["multi_modal_data"]["image"].size == IMAGE.size
    text_only = render_prompt_text(tokenizer, TINY, request(image=None), multimodal=True)
    assert "<image>" not in text_only
    assert "multi_modal_data" not in build_prompt(text_only, request(image=None), multimodal=True)
    assert "multi_modal_data" not in build_prompt(text, request(), multimodal=False)


def test_sampling_params_stop_at_the_delimiter_and_space_seeds() -> None:
    kwargs = sampling_kwargs(request().sampling, stop="\n")
    assert kwargs == {
        "n": 3,
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": -1,
        "max_tokens": 16,
        "seed": 7 * SEED_STRIDE,
        "stop": ["\n"],
        "include_stop_str_in_output": True,
    }
    assert "stop" not in sampling_kwargs(request("direct").sampling, stop=None)
    # vLLM gives child i the seed + i: children of consecutive job seeds must not overlap
    children = [
        {sampling_kwargs(request(seed=s, n=64).sampling, stop=None)["seed"] + i for i in range(64)} for s in (7, 8)
    ]
    assert not children[0] & children[1]
    with pytest.raises(ValueError):
        sampling_kwargs(SamplingParams(n=64, seed=1).model_copy(update={"n": SEED_STRIDE + 1}), stop=None)


@pytest.mark.parametrize(
    ("output", "text", "finish"),
    [
        (FakeCompletion(0, "x is 3.\n", [1, 2, 3], "stop", "\n"), "x is 3.", "delimiter"),
        (FakeCompletion(0, " The answer is 3", [1, 2], "stop", None), "The answer is 3", "eos"),
        (FakeCompletion(0, "x is", [1] * 16, "length", None), "x is", "length"),
        (FakeCompletion(0, "x", [1], "stop", 2), "x", "eos"),
    ],
)
def test_finish_reasons(output: FakeCompletion, text: str, finish: str) -> None:
    candidate = candidate_from_output(output, delimiter="\n")
    assert (candidate.text, candidate.finish_reason, candidate.num_tokens) == (text, finish, len(output.token_ids))


class _FakeVllm:
    """A stand-in ``vllm`` package recording what the backend asks of the engine."""

    def __init__(self) -> None:
        self.engine_args: dict[str, Any] = {}
        self.calls: list[tuple[dict[str, Any], Any]] = []
        self.shut_down = False

    def modules(self) -> dict[str, types.ModuleType]:
        fake = self

        class RequestOutputKind(enum.Enum):
            CUMULATIVE = 0
            DELTA = 1
            FINAL_ONLY = 2

        class SamplingParams:
            def __init__(self, **kwargs: Any) -> None:
                self.__dict__.update(kwargs)

        class AsyncEngineArgs:
            def __init__(self, **kwargs: Any) -> None:
                fake.engine_args = kwargs

        class AsyncLLM:
            @classmethod
            def from_engine_args(cls, args: AsyncEngineArgs) -> AsyncLLM:
                return cls()

            async def generate(self, prompt: dict[str, Any], params: Any, request_id: str) -> AsyncIterator[Any]:
                fake.calls.append((prompt, params))
                outputs = [FakeCompletion(i, f"step {i}\n", [i, 9], "stop", "\n") for i in reversed(range(params.n))]
                yield FakeRequestOutput(outputs)

            def shutdown(self) -> None:
                fake.shut_down = True

        root = types.ModuleType("vllm")
        root.SamplingParams = SamplingParams  # type: ignore[attr-defined]
        root.AsyncEngineArgs = AsyncEngineArgs  # type: ignore[attr-defined]
        sampling = types.ModuleType("vllm.sampling_params")
        sampling.RequestOutputKind = RequestOutputKind  # type: ignore[attr-defined]
        async_llm = types.ModuleType("vllm.v1.engine.async_llm")
        async_llm.AsyncLLM = AsyncLLM  # type: ignore[attr-defined]
        return {
            "vllm": root,
            "vllm.sampling_params": sampling,
            "vllm.v1": types.ModuleType("vllm.v1"),
            "vllm.v1.engine": types.ModuleType("vllm.v1.engine"),
            "vllm.v1.engine.async_llm": async_llm,
        }


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeVllm]:
    fake = _FakeVllm()
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    yield fake


def test_vllm_policy_sends_one_final_only_request_per_job(fake_vllm: _FakeVllm) -> None:
    policy = VllmPolicy(
        {"model": "/models/tiny", "gpu_memory_utilization": 0.5}, preset="tiny", template_owner=char_tokenizer(),
        multimodal=True,
    )  # fmt: skip
    try:
        results = policy.generate([request(n=3, seed=1), request("direct", n=2, seed=2, image=None)])
    finally:
        policy.close()
    assert fake_vllm.engine_args == {"model": "/models/tiny", "gpu_memory_utilization": 0.5}
    assert fake_vllm.shut_down and policy.model_calls == 1
    assert [len(r) for r in results] == [3, 2]
    assert [c.text for c in results[0]] == ["step 0", "step 1", "step 2"], "children in index order"
    assert {c.finish_reason for c in results[0]} == {"delimiter"}
    assert {c.finish_reason for c in results[1]} == {"eos"}, "no stop string for direct answers"
    (step_prompt, step_params), (direct_prompt, direct_params) = sorted(fake_vllm.calls, key=lambda c: -c[1].n)
    assert step_params.output_kind.name == "FINAL_ONLY" and direct_params.output_kind.name == "FINAL_ONLY"
    assert step_params.stop == ["\n"] and step_params.include_stop_str_in_output and step_params.seed == SEED_STRIDE
    assert "<image>" in step_prompt["prompt"] and "multi_modal_data" in step_prompt
    assert "multi_modal_data" not in direct_prompt and not hasattr(direct_params, "stop")


def test_openai_chat_payload_keeps_history_in_the_user_prompt_by_default() -> None:
    body = chat_request(TINY, request(), model="policy").model_dump(mode="json", exclude_none=True)
    [user] = body["messages"]
    image_part, text_part = user["content"]
    assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert text_part["text"] == TINY.render("step", "What is x?", ["x is 2.", "so 2x is 4."])
    assert body["add_generation_prompt"] is True and body["continue_final_message"] is False
    for name, value in {"temperature": 0.8, "top_p": 0.95, "top_k": -1, "n": 3, "seed": 7 * SEED_STRIDE}.items():
        assert body[name] == value, name
    assert body["stop"] == ["\n"] and body["include_stop_str_in_output"] is True and body["max_tokens"] == 16


def test_openai_chat_payload_continues_the_steps_as_an_assistant_message() -> None:
    body = chat_request(TINY, request(), model="policy", history="assistant").model_dump(mode="json")
    user, assistant = body["messages"]
    assert user["content"][1]["text"] == TINY.render("step", "What is x?", [])
    assert assistant == {"role": "assistant", "content": "x is 2.\nso 2x is 4.\n"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    no_steps = GenerationRequest("step", "Q", [], None, SamplingParams())
    first = chat_request(TINY, no_steps, model="policy", history="assistant")
    assert len(first.messages) == 1 and first.add_generation_prompt and first.messages[0].content == "[step] Q\n"


def test_images_are_encoded_once_per_image_object() -> None:
    cache = DataUrlCache(size=2)
    first = cache.get(IMAGE)
    assert cache.get(IMAGE) is first
    assert chat_request(TINY, request(), model="p", image_url=first).messages[0].content[0].image_url.url is first  # type: ignore[union-attr]
    for _ in range(2):
        cache.get(Image.new("RGB", (4, 4)))
    assert cache.get(IMAGE) is not first and cache.get(IMAGE) == first, "evicted, re-encoded to the same URL"


def test_openai_chat_response_to_candidates() -> None:
    response = ChatCompletionResponse.model_validate(
        {
            "choices": [
                {"index": 1, "message": {"content": "y\n"}, "finish_reason": "stop", "stop_reason": "\n"},
                {"index": 0, "message": {"content": "x"}, "finish_reason": "length", "token_ids": [1, 2]},
                {"index": 2, "message": {"content": "z"}, "finish_reason": "stop", "stop_reason": None},
            ],
            "usage": {"completion_tokens": 9},
        }
    )
    candidates = candidates_from_response(response, n=3, delimiter="\n")
    assert [(c.text, c.finish_reason) for c in candidates] == [("x", "length"), ("y", "delimiter"), ("z", "eos")]
    assert [c.num_tokens for c in candidates] == [2, 3, 3]
    with pytest.raises(RemoteError):
        candidates_from_response(response, n=4, delimiter="\n")


def test_pooling_payload_and_scores() -> None:
    payload = pooling_request(QWEN_PRM, "q", [" a ", "b"], model="prm")
    assert [m.role for m in payload.messages] == ["system", "user", "assistant"]
    # the model card's layout: steps as given, joined by the separator, one more at the end
    assert payload.messages[2].content == " a <extra_0>b<extra_0>" and payload.task == "token_classify"
    response = PoolingResponse.model_validate({"data": [{"data": [[0.9, 0.1], [0.25, 0.75]]}]})
    assert scores_from_pooling(response, 2) == [0.1, 0.75]
    with pytest.raises(RemoteError):
        scores_from_pooling(response, 3)


def test_completions_payload_and_label_probabilities() -> None:
    payload = completion_request([[1, 2, 3], [1, 2, 3, 4, 3]], (10, 11), model="prm")
    assert payload.max_tokens == 1 and payload.logprob_token_ids == [10, 11] and payload.return_tokens_as_token_ids
    top = {"token_id:10": math.log(0.6), "token_id:11": math.log(0.2), "token_id:5": math.log(0.1)}
    response = CompletionResponse.model_validate(
        {"choices": [{"index": i, "logprobs": {"top_logprobs": [top]}} for i in range(2)]}
    )
    assert scores_from_completions(response, (10, 11), 2) == [0.75, 0.75]
    with pytest.raises(RemoteError):
        scores_from_completions(response, (10, 12), 2)


def test_remote_backends_need_an_explicit_url() -> None:
    assert Settings().policy_base_url is None and Settings().prm_base_url is None, "nothing is sent by default"
    with pytest.raises(ValueError, match="POLICY_BASE_URL"):
        load_policy(Settings(policy_backend="openai"))
    with pytest.raises(ValueError, match="PRM_BASE_URL"):
        load_prm(Settings(prm_backend="openai-pooling", prm_preset="qwen-prm"))
    assert server_root("http://h:8000/v1/") == "http://h:8000"
