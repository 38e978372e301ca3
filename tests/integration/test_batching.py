"""Batching: N candidates are one model call; jobs of concurrent requests share model calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from atomthink.protocol import SamplingParams
from atomthink.settings import Settings
from atomthink_serve.embedded import embedded_runtime
from service.schemas import SolveParams
from workers.backends.base import GenerationRequest, ScoreRequest
from workers.backends.hf_policy import TransformersPolicy
from workers.backends.hf_prm import TransformersPrm

pytestmark = pytest.mark.integration


class CallCounter:
    """Counts invocations of a real model method without changing what it does."""

    def __init__(self, target: Any, name: str) -> None:
        self.calls = 0
        original = getattr(target, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        setattr(target, name, counted)


@pytest.fixture(scope="module")
def backends(tiny_models: dict[str, Path]) -> tuple[TransformersPolicy, TransformersPrm]:
    return TransformersPolicy(str(tiny_models["policy"]), device="cpu"), TransformersPrm(
        str(tiny_models["prm"]), device="cpu"
    )


def test_n_candidates_are_one_generate_call(backends: tuple[TransformersPolicy, TransformersPrm]) -> None:
    policy, _ = backends
    counter = CallCounter(policy.model, "generate")
    image = Image.new("RGB", (64, 64), "white")
    request = GenerationRequest("step", "What is A?", ["A is 3."], image, SamplingParams(n=8, max_new_tokens=8))
    [candidates] = policy.generate([request])
    assert len(candidates) == 8
    assert counter.calls == 1
    assert len({c.text for c in candidates}) > 1, "rows sample independently"


def test_candidate_text_does_not_depend_on_its_batch(
    backends: tuple[TransformersPolicy, TransformersPrm],
) -> None:
    policy, _ = backends
    image = Image.new("RGB", (64, 64), "white")
    a = GenerationRequest("step", "What is A?", [], image, SamplingParams(n=3, seed=1, max_new_tokens=8))
    b = GenerationRequest("step", "Area?", ["x"], None, SamplingParams(n=2, seed=2, max_new_tokens=8))
    alone = policy.generate([a])[0]
    together = policy.generate([b, a])[1]
    assert [c.text for c in alone] == [c.text for c in together]


def test_all_paths_are_one_prm_forward(backends: tuple[TransformersPolicy, TransformersPrm]) -> None:
    _, prm = backends
    counter = CallCounter(prm.model, "forward")
    requests = [ScoreRequest("q1", [["a", "b"], ["c"]]), ScoreRequest("q2", [["d", "e", "f"]])]
    scores = prm.score(requests)
    assert [[len(path) for path in r] for r in scores] == [[2, 1], [3]]
    assert counter.calls == 1
    # a causal PRM: a step's score does not depend on later steps or on batch neighbours
    assert prm.score([ScoreRequest("q1", [["a"]])])[0][0][0] == pytest.approx(scores[0][0][0], abs=1e-5)


async def test_requests_share_model_calls_through_the_queue(tiny_models: dict[str, Path]) -> None:
    settings = Settings(
        policy_model=str(tiny_models["policy"]),
        prm_model=str(tiny_models["prm"]),
        max_step_tokens=8,
        policy_max_wait_ms=50,
        prm_max_wait_ms=50,
        device="cpu",
    )
    async with embedded_runtime(settings) as runtime:
        assert isinstance(runtime.policy, TransformersPolicy) and isinstance(runtime.prm, TransformersPrm)
        policy_calls = CallCounter(runtime.policy.model, "generate")
        prm_calls = CallCounter(runtime.prm.model, "forward")
        params = SolveParams(question="What is B?", mode="slow", strategy="beam", candidates=4, beam_width=2,
                             max_steps=2, seed=1)  # fmt: skip
        one = await runtime.solve(params)
        # jobs: root, two beams at depth 2, one fallback answer (no final step from a random model);
        # model calls: the two beams' expansions (4 candidates each) ran as one batch
        assert one.stats.policy_calls == 4 and not one.final
        assert policy_calls.calls == 3
        assert prm_calls.calls == one.stats.prm_calls == 2
        policy_calls.calls = prm_calls.calls = 0
        results = await asyncio.gather(*(runtime.solve(params.model_copy(update={"seed": s})) for s in range(4)))
        jobs = sum(r.stats.policy_calls for r in results)
        assert policy_calls.calls < jobs, "jobs of concurrent requests run in shared model calls"
        assert prm_calls.calls < sum(r.stats.prm_calls for r in results)


def test_text_only_causal_lm_policy(tiny_models: dict[str, Path]) -> None:
    """A text-only checkpoint (here the tiny Llama) serves as a policy through ``AutoModelForCausalLM``."""
    policy = TransformersPolicy(str(tiny_models["prm"]), device="cpu")
    assert not policy.multimodal
    counter = CallCounter(policy.model, "generate")
    request = GenerationRequest("step", "What is 2 + 3?", ["2 + 3 = 5"], None, SamplingParams(n=4, max_new_tokens=6))
    [candidates] = policy.generate([request])
    assert len(candidates) == 4 and counter.calls == 1
    assert all(c.finish_reason in ("delimiter", "eos", "length") and c.num_tokens <= 6 for c in candidates)
