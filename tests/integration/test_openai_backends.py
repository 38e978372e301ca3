"""The OpenAI-compatible policy and PRM backends against a real local server (the project's adapter over the tiny
transformers checkpoints): the checks the transformers backends pass, plus agreement with them."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from transformers import LlamaConfig, LlamaForTokenClassification

from atomthink.prompts import PRESET_FILE
from atomthink.protocol import SamplingParams
from atomthink.settings import Settings
from atomthink_serve.embedded import build_runtime
from harness.servers import ServerProcess
from research.modeling.tiny import char_tokenizer
from service.schemas import SolveParams
from workers.backends.base import GenerationRequest, ScoreRequest
from workers.backends.hf_policy import TransformersPolicy
from workers.backends.hf_prm import TransformersPrm
from workers.backends.openai_policy import OpenAIPolicy
from workers.backends.openai_prm import OpenAICompletionsPrm, OpenAIPoolingPrm
from workers.backends.registry import close_backend, load_policy, load_prm
from workers.backends.vllm_policy import SEED_STRIDE, render_prompt_text

pytestmark = pytest.mark.integration

FINISH_REASONS = {"delimiter", "eos", "length"}


class OpenAIServer(ServerProcess):
    """``python -m harness.openai_server`` on a free port."""

    def __init__(self, roles: str, env: dict[str, str], log_path: Path) -> None:
        super().__init__(
            ["--roles", roles],
            env,
            ready_path="/health",
            log_path=log_path,
            program=(sys.executable, "-m", "harness.openai_server"),
        )


def build_tiny_token_classification_prm(out_dir: Path) -> Path:
    """A randomly initialised Llama token-classification PRM with a one-token ``<extra_0>`` separator."""
    torch.manual_seed(0)
    tokenizer = char_tokenizer()
    tokenizer.add_tokens(["<extra_0>"], special_tokens=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.num_labels = 2
    LlamaForTokenClassification(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / PRESET_FILE).write_text(json.dumps({"prm_preset": "qwen-prm"}))
    return out_dir


def flat(scores: list[list[list[float]]]) -> list[float]:
    return [s for request in scores for path in request for s in path]


API_KEY = "test-key"


def server_env(policy: Path, prm: Path) -> dict[str, str]:
    return {
        "ATOMTHINK_OPENAI_API_KEY": API_KEY,
        "ATOMTHINK_POLICY_MODEL": str(policy),
        "ATOMTHINK_PRM_MODEL": str(prm),
        "ATOMTHINK_TORCH_THREADS": "1",
        "ATOMTHINK_DEVICE": "cpu",
    }


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "openai-server.log"
    with OpenAIServer("policy,prm", server_env(tiny_models["policy"], tiny_models["prm"]), log) as running:
        yield running


@pytest.fixture(scope="module")
def classifier_prm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_token_classification_prm(tmp_path_factory.mktemp("token-prm"))


@pytest.fixture(scope="module")
def pooling_server(
    tiny_models: dict[str, Path], classifier_prm: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "openai-pooling.log"
    with OpenAIServer("prm", server_env(tiny_models["policy"], classifier_prm), log) as running:
        yield running


def remote_settings(server: ServerProcess, tiny_models: dict[str, Path], **extra: object) -> Settings:
    return Settings(
        policy_backend="openai",
        prm_backend="openai-completions",
        policy_base_url=server.url + "/v1",
        prm_base_url=server.url + "/v1",
        policy_model=str(tiny_models["policy"]),
        prm_model=str(tiny_models["prm"]),
        openai_api_key=API_KEY,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def remote_policy(server: ServerProcess, tiny_models: dict[str, Path]) -> Iterator[OpenAIPolicy]:
    policy = load_policy(remote_settings(server, tiny_models))
    assert isinstance(policy, OpenAIPolicy)
    yield policy
    close_backend(policy)


@pytest.fixture(scope="module")
def local_policy(tiny_models: dict[str, Path]) -> TransformersPolicy:
    torch.set_num_threads(1)
    return TransformersPolicy(str(tiny_models["policy"]), device="cpu")


def step_request(seed: int, n: int = 3, steps: tuple[str, ...] = ("A is 3.",)) -> GenerationRequest:
    image = Image.new("RGB", (64, 64), "white")
    return GenerationRequest("step", "What is A?", list(steps), image, SamplingParams(n=n, seed=seed, max_new_tokens=8))


def test_policy_candidates_and_finish_reasons(remote_policy: OpenAIPolicy) -> None:
    requests = [
        step_request(seed=1, n=4),
        GenerationRequest("direct", "Area?", [], None, SamplingParams(n=2, seed=2, max_new_tokens=6)),
    ]
    calls = remote_policy.model_calls
    step, direct = remote_policy.generate(requests)
    assert len(step) == 4 and len(direct) == 2
    assert remote_policy.model_calls == calls + 1
    for candidate in step + direct:
        assert candidate.finish_reason in FINISH_REASONS
        assert "\n" not in candidate.text
    assert all(c.finish_reason != "delimiter" for c in direct), "direct answers do not stop at the delimiter"
    assert len({c.text for c in step}) > 1, "candidates sample independently"


def test_policy_is_deterministic_per_seed_and_batch_independent(remote_policy: OpenAIPolicy) -> None:
    alone = remote_policy.generate([step_request(seed=5)])[0]
    again = remote_policy.generate([step_request(seed=5)])[0]
    other = GenerationRequest("step", "Area?", ["x"], None, SamplingParams(n=2, seed=6, max_new_tokens=8))
    together = remote_policy.generate([other, step_request(seed=5)])[1]
    assert alone == again == together
    assert remote_policy.generate([step_request(seed=6)])[0] != alone


def test_policy_prompt_and_seeds_match_the_transformers_backend(
    remote_policy: OpenAIPolicy, local_policy: TransformersPolicy
) -> None:
    """Choice ``i`` of a job with seed ``s`` is the transformers backend's sample with seed ``s * stride + i``."""
    remote = remote_policy.generate([step_request(seed=3, n=3)])[0]
    for i, candidate in enumerate(remote):
        [[local]] = local_policy.generate([step_request(seed=3 * SEED_STRIDE + i, n=1)])
        assert (candidate.text, candidate.finish_reason) == (local.text, local.finish_reason)


def test_policy_logprobs_match_the_transformers_backend(
    remote_policy: OpenAIPolicy, local_policy: TransformersPolicy
) -> None:
    """Asked for ``logprobs``, a remote choice carries the transformers backend's own token log-probabilities (the
    adapter serves them through ``logprobs`` / ``top_logprobs`` as vLLM does); unasked, none travel."""
    request = step_request(seed=4, n=2)
    asked = GenerationRequest(
        request.kind,
        request.question,
        request.steps,
        request.image,
        request.sampling.model_copy(update={"logprobs": 3}),
    )
    remote = remote_policy.generate([asked])[0]
    assert all(c.token_logprobs is None for c in remote_policy.generate([request])[0])
    for i, candidate in enumerate(remote):
        sampling = SamplingParams(n=1, seed=4 * SEED_STRIDE + i, max_new_tokens=8, logprobs=3)
        [[local]] = local_policy.generate(
            [GenerationRequest("step", "What is A?", ["A is 3."], request.image, sampling)]
        )
        assert candidate.text == local.text
        assert candidate.prompt_tokens == local.prompt_tokens > 0, "usage.prompt_tokens carries the prompt's length"
        assert candidate.token_logprobs == pytest.approx(local.token_logprobs, abs=1e-5)
        assert candidate.top_logprobs is not None and local.top_logprobs is not None
        assert len(candidate.top_logprobs) == len(local.top_logprobs)
        for remote_top, local_top in zip(candidate.top_logprobs, local.top_logprobs, strict=True):
            assert remote_top == pytest.approx(local_top, abs=1e-5)


def test_vllm_prompt_text_matches_the_transformers_backend(local_policy: TransformersPolicy) -> None:
    for request in (step_request(seed=0), GenerationRequest("cot", "Q?", [], None, SamplingParams())):
        with_image = request.image is not None
        expected = local_policy._prompt_text(request, with_image)
        assert render_prompt_text(local_policy.processor, local_policy.preset, request, multimodal=True) == expected


def test_policy_with_steps_as_a_continued_assistant_message(
    server: ServerProcess, tiny_models: dict[str, Path]
) -> None:
    policy = load_policy(remote_settings(server, tiny_models, policy_history="assistant"))
    try:
        [candidates] = policy.generate([step_request(seed=1, n=2, steps=("A is 3.", "B is 4."))])
        assert len(candidates) == 2 and all(c.finish_reason in FINISH_REASONS for c in candidates)
    finally:
        close_backend(policy)


def test_completions_prm_scores_equal_the_transformers_prm(server: ServerProcess, tiny_models: dict[str, Path]) -> None:
    remote = load_prm(remote_settings(server, tiny_models))
    assert isinstance(remote, OpenAICompletionsPrm)
    requests = [ScoreRequest("q1", [["a", "b"], ["c"]]), ScoreRequest("q2", [["d", "e", "f"]])]
    try:
        scores = remote.score(requests)
    finally:
        close_backend(remote)
    assert [[len(path) for path in r] for r in scores] == [[2, 1], [3]]
    assert all(0.0 <= s <= 1.0 for r in scores for path in r for s in path)
    local = TransformersPrm(str(tiny_models["prm"]), device="cpu").score(requests)
    assert flat(scores) == pytest.approx(flat(local), abs=1e-5)


def test_pooling_prm_scores_equal_the_transformers_prm(
    pooling_server: ServerProcess, tiny_models: dict[str, Path], classifier_prm: Path
) -> None:
    settings = Settings(
        prm_backend="openai-pooling",
        prm_base_url=pooling_server.url + "/v1",
        prm_model=str(classifier_prm),
        openai_api_key=API_KEY,
    )
    remote = load_prm(settings)
    assert isinstance(remote, OpenAIPoolingPrm)
    requests = [ScoreRequest("q1", [["a", "b"], ["c"]]), ScoreRequest("q2", [["d", "e", "f"]])]
    try:
        scores = remote.score(requests)
    finally:
        close_backend(remote)
    assert [[len(path) for path in r] for r in scores] == [[2, 1], [3]]
    assert all(0.0 <= s <= 1.0 for r in scores for path in r for s in path)
    local = TransformersPrm(str(classifier_prm), device="cpu").score(requests)
    assert flat(scores) == pytest.approx(flat(local), abs=1e-5)


async def test_slow_solve_through_remote_backends(server: ServerProcess, tiny_models: dict[str, Path]) -> None:
    settings = remote_settings(server, tiny_models, max_step_tokens=8, policy_max_wait_ms=20, prm_max_wait_ms=20)
    policy, prm = load_policy(settings), load_prm(settings)
    try:
        async with build_runtime(settings, policy=policy, prm=prm) as runtime:
            params = SolveParams(question="What is B?", mode="slow", strategy="beam", candidates=3, beam_width=2,
                                 max_steps=2, seed=1)  # fmt: skip
            first = await runtime.solve(params)
            second = await runtime.solve(params)
    finally:
        close_backend(policy)
        close_backend(prm)
    assert first.steps and all(0.0 <= s.score <= 1.0 for s in first.steps if s.score is not None)
    assert first.stats.prm_calls >= 1 and first.stats.policy_calls >= 2
    assert [s.text for s in first.steps] == [s.text for s in second.steps], "a seeded request replays"


def test_adapter_rejects_what_vllm_rejects(server: ServerProcess) -> None:
    url, auth = server.url + "/v1/chat/completions", {"Authorization": f"Bearer {API_KEY}"}
    chat = {"model": "policy", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    assert httpx.post(url, json=chat, headers=auth).status_code == 200
    assert httpx.post(url, json=chat).status_code == 401, "the key is required"
    both = {**chat, "continue_final_message": True, "messages": [{"role": "assistant", "content": "x"}]}
    assert httpx.post(url, json=both, headers=auth).status_code == 400
    assert httpx.post(url, json={**chat, "model": "nope"}, headers=auth).status_code == 404
    models = httpx.get(server.url + "/v1/models").json()
    assert {m["id"] for m in models["data"]} == {"policy", "prm"}
