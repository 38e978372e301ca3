"""Token log-probabilities from the policy backends: the pure mappings on scripted values, and the transformers
backend on a real tiny checkpoint (only when asked for; the same sample either way; exact raw log-probabilities)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from atomthink.protocol import Candidate, SamplingParams
from workers.backends.base import GenerationRequest
from workers.backends.hf_policy import TransformersPolicy, token_logprobs, with_logprobs
from workers.backends.openai_policy import candidates_from_response, chat_request, remote_top_logprobs
from workers.backends.openai_wire import ChatCompletionResponse
from workers.backends.vllm_policy import logprobs_from_output, sampling_kwargs

SHIPPED_POLICY = Path(__file__).resolve().parents[3] / "models" / "atomthink-tiny-policy"


def test_token_logprobs_from_raw_logits_by_hand() -> None:
    # two rows, two positions, a vocabulary of three; row 1 asks for none
    logits = (torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    generated = torch.tensor([[1, 0], [2, 2]])
    [first, second] = token_logprobs(logits, generated, [2, None])
    assert second is None
    assert first is not None
    picked, top = first
    third = torch.log(torch.tensor(1 / 3)).item()
    e = torch.exp(torch.tensor(2.0)).item()
    assert picked == pytest.approx([third, torch.log(torch.tensor(e / (e + 2))).item()])
    assert top[0] == pytest.approx([third, third])
    second_row = [math.log(e / (e + 2)), -math.log(e + 2)]
    assert top[1] == pytest.approx(second_row)


def test_with_logprobs_drops_padding_after_the_last_token() -> None:
    candidate = Candidate(text="a", num_tokens=2, finish_reason="eos")
    out = with_logprobs(candidate, [-0.1, -0.2, -9.0], [[-0.1], [-0.2], [-9.0]])
    assert out.token_logprobs == [-0.1, -0.2] and out.top_logprobs == [[-0.1], [-0.2]]


def test_candidate_refuses_half_or_mismatched_logprobs() -> None:
    with pytest.raises(ValueError, match="come together"):
        Candidate(text="a", num_tokens=1, finish_reason="eos", token_logprobs=[-0.1])
    with pytest.raises(ValueError, match="positions"):
        Candidate(text="a", num_tokens=1, finish_reason="eos", token_logprobs=[-0.1], top_logprobs=[[-0.1], [-1.0]])
    with pytest.raises(ValueError):
        SamplingParams(logprobs=21)


@dataclass
class FakeLogprob:
    logprob: float
    rank: int | None


def test_vllm_logprobs_keep_the_ranked_top_k_and_the_sampled_token() -> None:
    # vLLM lists the sampled token first (rank 7 here, outside the top 2), then ranks 1..k
    positions = [
        {5: FakeLogprob(-3.0, 7), 1: FakeLogprob(-0.2, 1), 2: FakeLogprob(-1.9, 2)},
        {1: FakeLogprob(-0.05, 1), 3: FakeLogprob(-3.5, 2)},
    ]
    picked, top = logprobs_from_output(positions, [5, 1], 2)
    assert picked == [-3.0, -0.05]
    assert top == [[-0.2, -1.9], [-0.05, -3.5]]
    with pytest.raises(RuntimeError, match="1 of 2"):
        logprobs_from_output(positions[:1], [5, 1], 2)


def test_sampling_kwargs_ask_vllm_for_logprobs_only_when_asked() -> None:
    assert "logprobs" not in sampling_kwargs(SamplingParams(), stop=None)
    assert sampling_kwargs(SamplingParams(logprobs=5), stop=None)["logprobs"] == 5


def test_openai_request_and_response_carry_top_logprobs() -> None:
    from atomthink.prompts import TINY

    request = GenerationRequest("step", "Q?", [], None, SamplingParams(n=1, logprobs=3))
    payload = chat_request(TINY, request, model="m")
    assert payload.logprobs is True and payload.top_logprobs == 4
    plain = chat_request(TINY, GenerationRequest("step", "Q?", [], None, SamplingParams()), model="m")
    assert plain.logprobs is False and plain.top_logprobs is None
    assert "logprobs" not in plain.model_dump(exclude_defaults=True)
    assert remote_top_logprobs(20) == 20 and remote_top_logprobs(0) == 0
    # vLLM's order: the sampled token first (outside the top 3 here), then the ranked ones, cut at top_logprobs
    response = ChatCompletionResponse.model_validate(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ab"},
                    "finish_reason": "stop",
                    "logprobs": {
                        "content": [
                            {
                                "token": "a",
                                "logprob": -4.0,
                                "top_logprobs": [
                                    {"token": "a", "logprob": -4.0},
                                    {"token": "x", "logprob": -0.1},
                                    {"token": "y", "logprob": -2.0},
                                    {"token": "z", "logprob": -3.0},
                                ],
                            },
                            {"token": "b", "logprob": -0.3, "top_logprobs": [{"token": "b", "logprob": -0.3}]},
                        ]
                    },
                }
            ],
            "usage": {"completion_tokens": 9},
        }
    )
    [candidate] = candidates_from_response(response, n=1, delimiter=None, logprobs=3)
    assert candidate.token_logprobs == [-4.0, -0.3]
    assert candidate.top_logprobs == [[-0.1, -2.0, -3.0], [-0.3]]
    assert candidate.num_tokens == 2, "without token_ids the logprobs count the tokens"
    [plain_candidate] = candidates_from_response(response, n=1, delimiter=None)
    assert plain_candidate.token_logprobs is None


@pytest.fixture(scope="module")
def policy() -> TransformersPolicy:
    torch.set_num_threads(1)
    return TransformersPolicy(str(SHIPPED_POLICY), device="cpu")


def _request(seed: int, logprobs: int | None, temperature: float = 1.0, n: int = 3) -> GenerationRequest:
    image = Image.new("RGB", (64, 64), "white")
    sampling = SamplingParams(n=n, seed=seed, temperature=temperature, max_new_tokens=16, logprobs=logprobs)
    return GenerationRequest("step", "What is 3 + 4?", [], image, sampling)


def test_transformers_logprobs_only_when_asked_and_the_same_samples(policy: TransformersPolicy) -> None:
    [plain] = policy.generate([_request(3, None)])
    [with_lp] = policy.generate([_request(3, 5)])
    assert all(c.token_logprobs is None and c.top_logprobs is None for c in plain)
    assert [c.model_copy(update={"token_logprobs": None, "top_logprobs": None}) for c in with_lp] == plain
    for candidate in with_lp:
        assert candidate.token_logprobs is not None and candidate.top_logprobs is not None
        assert len(candidate.token_logprobs) == len(candidate.top_logprobs) == candidate.num_tokens > 0
        for picked, top in zip(candidate.token_logprobs, candidate.top_logprobs, strict=True):
            assert len(top) == 5 and top == sorted(top, reverse=True)
            assert picked <= top[0] + 1e-6 and all(v <= 0 for v in top)


def test_transformers_logprobs_are_the_model_s_raw_distribution(policy: TransformersPolicy) -> None:
    """Greedy: the sampled token is the most likely one; hotter sampling does not change what is reported (raw
    log-probabilities, before temperature), so the first position agrees across temperatures."""
    [greedy] = policy.generate([_request(1, 3, temperature=0.0, n=1)])
    [hot] = policy.generate([_request(1, 3, temperature=1.6, n=2)])
    candidate = greedy[0]
    assert candidate.token_logprobs is not None and candidate.top_logprobs is not None
    assert candidate.token_logprobs == pytest.approx([top[0] for top in candidate.top_logprobs])
    for other in hot:
        assert other.top_logprobs is not None
        assert other.top_logprobs[0] == pytest.approx(candidate.top_logprobs[0], abs=1e-5)


def test_transformers_logprobs_mixed_in_a_batch(policy: TransformersPolicy) -> None:
    alone = policy.generate([_request(7, 2)])[0]
    mixed = policy.generate([_request(8, None), _request(7, 2)])
    assert all(c.token_logprobs is None for c in mixed[0])
    for a, b in zip(alone, mixed[1], strict=True):
        assert a.text == b.text
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)


def test_transformers_counts_each_candidate_s_prompt_tokens(policy: TransformersPolicy) -> None:
    """``prompt_tokens`` is the unpadded prompt length (image positions included), as the context window counts it,
    whatever the request is batched with."""
    short = GenerationRequest("step", "2?", [], None, SamplingParams(n=2, seed=1, max_new_tokens=4))
    long = _request(2, None, n=1)
    out_short, out_long = policy.generate([short, long])
    assert policy.window is not None
    assert {c.prompt_tokens for c in out_short} == {policy.window.prompt_tokens(short)}
    assert [c.prompt_tokens for c in out_long] == [policy.window.prompt_tokens(long)]
    assert out_long[0].prompt_tokens > out_short[0].prompt_tokens > 0
