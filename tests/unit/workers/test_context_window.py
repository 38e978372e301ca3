"""Context windows counted with the shipped checkpoints' real tokenizers: the fit rule, the gateway's first check."""

from __future__ import annotations

import pytest
from PIL import Image

from atomthink.context import FirstPromptCheck, PolicyWindow, PrmWindow
from atomthink.errors import ContextTooLong
from atomthink.protocol import SamplingParams
from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR
from workers.backends.base import GenerationRequest, ScoreRequest


@pytest.fixture(scope="module")
def policy() -> PolicyWindow:
    window = PolicyWindow.from_checkpoint(str(DEFAULT_POLICY_DIR))
    assert window is not None
    return window


@pytest.fixture(scope="module")
def prm() -> PrmWindow:
    window = PrmWindow.from_checkpoint(str(DEFAULT_PRM_DIR))
    assert window is not None
    return window


def test_shipped_models_have_1024_positions(policy: PolicyWindow, prm: PrmWindow) -> None:
    assert policy.window == 1024 and prm.window == 1024
    assert policy.image_tokens is not None and policy.image_tokens > 0  # one <image> placeholder is many positions


def test_a_step_never_goes_past_the_window(policy: PolicyWindow) -> None:
    """For every history length: either the whole step budget fits, or the job is refused."""
    budget = SamplingParams(max_new_tokens=96)
    refused = 0
    for steps in range(0, 120, 3):
        request = GenerationRequest("step", "What is 7 times 8?", ["Bar A is 7."] * steps, None, budget)
        used = policy.prompt_tokens(request)
        try:
            fitted = policy.fit(request)
        except ContextTooLong as exc:
            refused += 1
            assert used + 96 > 1024
            assert "context window of 1024 positions" in exc.message and exc.status_code == 400
            continue
        assert fitted.sampling.max_new_tokens == 96 and used + 96 <= 1024
    assert refused > 0


def test_whole_answers_are_cut_to_the_room_down_to_their_floor(policy: PolicyWindow) -> None:
    image = Image.new("RGB", (8, 8))
    answer = SamplingParams(max_new_tokens=1024, min_new_tokens=96)
    fitted = policy.fit(GenerationRequest("cot", "What is 7 times 8?", [], image, answer))
    used = policy.prompt_tokens(GenerationRequest("cot", "What is 7 times 8?", [], image, answer))
    assert fitted.sampling.max_new_tokens == 1024 - used  # cut: prompt + generation == the window exactly
    with pytest.raises(ContextTooLong, match=r"needs 96 more for its cot"):
        policy.fit(GenerationRequest("cot", "x" * (1024 - used), [], image, answer))


def test_prm_paths_over_the_window_are_refused(prm: PrmWindow) -> None:
    prm.fit(ScoreRequest("What is 7 times 8?", [["Bar A is 7."] * 10]))
    with pytest.raises(ContextTooLong, match="PRM's context window of 1024 positions"):
        prm.fit(ScoreRequest("What is 7 times 8?", [["Bar A is 7."], ["Bar A is 7."] * 100]))


def test_first_prompt_check_names_the_model_and_its_limit(policy: PolicyWindow, prm: PrmWindow) -> None:
    check = FirstPromptCheck(policy, prm)
    step = SamplingParams(max_new_tokens=96)
    check.check("step", "What is 7 times 8?", True, step, scored=True)
    with pytest.raises(ContextTooLong, match="policy's context window of 1024") as info:
        check.check("step", "x" * 4000, True, step, scored=False)
    assert info.value.field == "question"
    # fits the policy without an image but not the PRM with a 900-token step budget
    with pytest.raises(ContextTooLong, match="PRM's context window of 1024"):
        FirstPromptCheck(None, prm).check("step", "x" * 200, False, SamplingParams(max_new_tokens=900), scored=True)


def test_backends_count_with_tokenizers_of_their_own() -> None:
    """Counting runs on the event loop while generate() pads in a thread: sharing the tokenizer object raced (a fast
    tokenizer's padding is state of the object) and failed whole batches under tools/fuzz.py."""
    from workers.backends.hf_policy import TransformersPolicy
    from workers.backends.hf_prm import TransformersPrm

    policy = TransformersPolicy(str(DEFAULT_POLICY_DIR), device="cpu")
    prm = TransformersPrm(str(DEFAULT_PRM_DIR), device="cpu")
    assert policy.window is not None and prm.window is not None
    assert policy.window.tokenizer is not policy.tokenizer
    assert prm.window.tokenizer is not prm.tokenizer
    assert policy.window.window == 1024 and prm.window.window == 1024
