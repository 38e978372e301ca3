"""The tokenizers-only counter (``atomthink.context``: tokenizer.json, the chat template through jinja2, the image
positions from the processor config) counts every prompt exactly as transformers builds it: the golden is
transformers' own ``apply_chat_template`` text, its tokenizer's encoding and its processor's image expansion (the
counter the gateway used before), for the shipped tiny checkpoints and the model families' layouts, every prompt
kind, with and without an image; and PRM paths encode to the same ids on the shipped and on real vocabularies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from transformers import AutoConfig, AutoProcessor, AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from atomthink.context import PolicyWindow, PrmWindow, image_positions, render_prompt_text
from atomthink.prm_format import encode_path, get_prm_preset
from atomthink.prompts import PromptPreset
from atomthink.protocol import SamplingParams
from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR, REPO_ROOT
from research.modeling.families import build_policy_family, build_qwen_vl
from tests.real_vocab import mistral_v01_tokenizer, qwen_tokenizer
from workers.backends.base import GenerationRequest

TEXT_POLICY_DIR = REPO_ROOT / "models" / "atomthink-tiny-text-policy"
QUESTIONS = ["What is 7 times 8?", "Find x:  2x + 3 = 11.\nChoices: (A) 4 (B) 5", "<image> </s> <s> ки +", ""]
HISTORIES: list[list[str]] = [[], ["Bar A is 7."], ["Bar A is 7.", "  7 x 8 = 56 ки", "The answer is 56."]]


def transformers_count(
    owner: Any, tokenizer: Any, processor: Any, preset: PromptPreset, request: GenerationRequest
) -> int:
    """The counter the gateway used before: the text from transformers' template, its tokenizer's ids, plus the
    positions the processor adds for a 32x32 image beyond the placeholder."""
    multimodal = processor is not None
    text = render_prompt_text(owner, preset, request, multimodal=multimodal)
    count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if request.image is not None and multimodal:
        expanded = processor(images=[Image.new("RGB", (32, 32))], text=[processor.image_token])
        plain = tokenizer(processor.image_token, add_special_tokens=False)["input_ids"]
        count += len(expanded["input_ids"][0]) - len(plain)
    return count


def assert_counts_as_transformers(model: Path) -> PolicyWindow:
    window = PolicyWindow.from_checkpoint(str(model))
    assert window is not None
    multimodal = hasattr(AutoConfig.from_pretrained(model), "vision_config")
    processor = AutoProcessor.from_pretrained(model) if multimodal else None
    tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(model)
    owner = processor if processor is not None else tokenizer
    assert window.multimodal == multimodal and window.tokenizer.chat_template == owner.chat_template
    image = Image.new("RGB", (640, 480))
    checked = 0
    for kind in ("step", "direct", "cot", "final"):
        for question in QUESTIONS:
            for steps in HISTORIES if kind == "step" else [[]]:
                for with_image in (False, True):
                    request = GenerationRequest(kind, question, steps, image if with_image else None, SamplingParams())
                    expected = render_prompt_text(owner, window.preset, request, multimodal=multimodal)
                    ours = render_prompt_text(window.tokenizer, window.preset, request, multimodal=multimodal)
                    assert ours == expected
                    counted = transformers_count(owner, tokenizer, processor, window.preset, request)
                    assert window.prompt_tokens(request) == counted, (kind, question, steps, with_image)
                    checked += 1
    assert checked == 2 * (len(QUESTIONS) * len(HISTORIES) + 3 * len(QUESTIONS))
    return window


@pytest.mark.parametrize("model", [DEFAULT_POLICY_DIR, TEXT_POLICY_DIR], ids=["multimodal", "text"])
def test_shipped_policy_prompts_count_as_transformers_builds_them(model: Path) -> None:
    window = assert_counts_as_transformers(model)
    if window.multimodal:
        assert window.image_tokens == image_positions(str(model)) == 35  # 6x6 patches + CLS - CLS - placeholder


@pytest.mark.parametrize("family", ["llava", "mllama"])
def test_family_prompts_count_as_transformers_builds_them(family: str, tmp_path: Path) -> None:
    """The LLaVA-style and Llama-3.2-Vision layouts: their templates and image expansions."""
    assert_counts_as_transformers(build_policy_family(family, tmp_path / family))


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_qwen_vl_prompts_count_as_transformers_builds_them(family: str, tmp_path: Path) -> None:
    """Qwen2-VL's processor needs torchvision, which does not import here: the template text is its tokenizer's and
    the image positions its image processor's grid, merged as ``Qwen2VLProcessor`` merges it."""
    model = build_qwen_vl(tmp_path / family, family, with_processor=False)
    window = PolicyWindow.from_checkpoint(str(model))
    assert window is not None and window.multimodal
    tokenizer = AutoTokenizer.from_pretrained(model)
    images = Qwen2VLImageProcessorPil.from_pretrained(model)
    grid = images(images=[Image.new("RGB", (32, 32))])["image_grid_thw"][0]
    assert window.image_tokens == int(grid.prod()) // images.merge_size**2 - 1 == 3
    for kind in ("step", "direct", "cot", "final"):
        for question in QUESTIONS:
            for with_image in (False, True):
                request = GenerationRequest(
                    kind, question, ["Bar A is 7."], Image.new("RGB", (9, 9)) if with_image else None, SamplingParams()
                )
                text = render_prompt_text(tokenizer, window.preset, request, multimodal=True)
                assert render_prompt_text(window.tokenizer, window.preset, request, multimodal=True) == text
                expected = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 3 * with_image
                assert window.prompt_tokens(request) == expected


def test_shipped_prm_paths_count_as_transformers_encodes_them() -> None:
    window = PrmWindow.from_checkpoint(str(DEFAULT_PRM_DIR))
    assert window is not None
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_PRM_DIR)
    assert window.tokenizer.bos_token_id == tokenizer.bos_token_id
    for question in QUESTIONS:
        for steps in [[""], *HISTORIES]:
            ours = encode_path(window.tokenizer, window.preset, question, steps)
            assert ours == encode_path(tokenizer, window.preset, question, steps)


@pytest.mark.parametrize("preset", ["math-psa", "math-shepherd"])
def test_real_vocabulary_paths_encode_as_transformers_encodes_them(preset: str, tmp_path: Path) -> None:
    """Qwen's BPE (Math-psa) and Mistral v0.1's SentencePiece (Math-Shepherd), saved and read back as files."""
    tokenizer = qwen_tokenizer() if preset == "math-psa" else mistral_v01_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 4096}')
    window = PrmWindow.from_checkpoint(str(tmp_path), preset)
    assert window is not None and window.preset is get_prm_preset(preset)
    for question in QUESTIONS:
        for steps in [[""], *HISTORIES]:
            assert window.path_tokens(question, steps) == len(encode_path(tokenizer, window.preset, question, steps)[0])
            for text in (question, *steps):
                for special in (False, True):
                    assert window.tokenizer(text, add_special_tokens=special)["input_ids"] == list(
                        tokenizer(text, add_special_tokens=special)["input_ids"]
                    )
