"""LoRA recipes on tiny random-weight checkpoints of every supported family, built from their configs (no download):
SFT in the Markov format and PRM training for a few steps (the loss goes down), the outputs loaded by the serving
backends, and a real gateway answering ``/solve`` with a trained policy and a trained PRM.

Qwen2-VL and Qwen2.5-VL: their processors need torchvision (transformers' video processors import it), which cannot
import beside the CPU torch here; their full path runs where torchvision imports (GPU nodes) and is skipped here,
and what can run without it (the model from its config, LoRA on its decoder, text-only SFT) runs everywhere.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from atomthink.prm_format import get_prm_preset
from atomthink.prompts import ATOMTHINK_V1
from harness.servers import ServerProcess
from research.modeling.families import build_policy_family, build_qwen2_prm, build_qwen_vl
from research.training.lora_prm import LoraPrmConfig, train_lora_prm
from research.training.lora_sft import LoraSftConfig, load_markov_examples, train_lora_sft
from tests.conftest import model_env
from tests.real_vocab import qwen_tokenizer
from workers.backends.base import GenerationRequest, ScoreRequest

# training under a loaded CPU takes minutes per checkpoint: each test may train one (the rest are cached)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
STEPS = ["Step 1: A is 3.", "Step 2: 3 + 4 = 7.", "To sum up, the final answer is: 7"]
QWEN_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _went_down(losses: list[float]) -> bool:
    return len(losses) >= 6 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Official sharegpt Markov records (the v1 step prompt) and one annotated path, with an image."""
    root = tmp_path_factory.mktemp("sft-data")
    image = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(image).text((5, 5), "A=3", fill="black")
    image.save(root / "a.png")
    with open(root / "sft.jsonl", "w") as f:
        for k, step in enumerate(STEPS):
            human = "<image>\n" + ATOMTHINK_V1.render("step", "What is A + 4?", STEPS[:k])
            turns = [{"from": "human", "value": human}, {"from": "gpt", "value": step}]
            f.write(json.dumps({"image": "a.png", "conversations": turns}) + "\n")
        path = {"image": "a.png", "question": "What is A + 1?", "steps": ["Step 1: A is 3.", "The answer is 4"]}
        f.write(json.dumps(path) + "\n")
    return root


def _train_sft(family: str, root: Path, data: Path, **extra: Any) -> dict[str, Any]:
    base = build_policy_family(family, root / f"base-{family}")
    cfg = LoraSftConfig(model=str(base), data=[str(data)], out=str(root / f"sft-{family}"), max_steps=8,
                        batch_size=2, grad_accum=1, lr=5e-3, lora_r=8, logging_steps=1, **extra)  # fmt: skip
    return train_lora_sft(cfg)


class Trained:
    """Trains each family's (or PRM's) checkpoint on first use and keeps it for the module's tests."""

    def __init__(self, root: Path, sft_data: Path) -> None:
        self.root = root
        self.sft_data = sft_data
        self.policies: dict[str, tuple[Path, Any]] = {}
        self.prms: dict[str, tuple[Path, Any]] = {}

    def policy(self, family: str) -> tuple[Path, Any]:
        if family not in self.policies:
            self.policies[family] = (self.root / f"sft-{family}", _train_sft(family, self.root, self.sft_data))
        return self.policies[family]

    def prm(self, preset: str) -> tuple[Path, Any]:
        if preset not in self.prms:
            self.prms[preset] = _train_prm(preset, self.root)
        return self.prms[preset]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sft_data: Path) -> Trained:
    return Trained(tmp_path_factory.mktemp("trained"), sft_data)


def _prm_records(path: Path, preset: str) -> Path:
    tag = get_prm_preset(preset).step_tag
    with open(path, "w") as f:
        for a in range(2, 8):
            for b in (1, 2):
                process = f"{a} + {b} = {a + b}{tag}The answer is {a + b}{tag}"
                good = {"question": f"What is {a} + {b}?", "process": process, "label": ["+", "+"]}
                bad = {"question": f"What is {a} + {b}?", "process": f"{a} + {b} = {a + b + 1}{tag}", "label": ["-"]}
                f.write(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    return path


def _train_prm(preset: str, root: Path) -> tuple[Path, Any]:
    """A Math-psa causal-LM PRM or a Qwen2ForProcessRewardModel, on the real Qwen vocabulary."""
    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = QWEN_CHAT
    if preset == "qwen-prm":
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<extra_0>"]})
    base = build_qwen2_prm(root / f"base-{preset}", tokenizer, preset)
    cfg = LoraPrmConfig(model=str(base), data=[str(_prm_records(root / f"{preset}.jsonl", preset))],
                        out=str(root / f"prm-{preset}"), prm_preset=preset, max_steps=12, batch_size=8,
                        grad_accum=1, lr=1e-2, lora_r=8, logging_steps=1)  # fmt: skip
    return root / f"prm-{preset}", train_lora_prm(cfg)


def test_markov_examples_from_both_record_layouts(sft_data: Path) -> None:
    examples = load_markov_examples([str(sft_data)], ATOMTHINK_V1)
    assert len(examples) == 3 + 2
    first = examples[0]
    assert first["prompt"] == ATOMTHINK_V1.render("step", "What is A + 4?", [])  # the <image> placeholder dropped
    assert [e["final"] for e in examples] == [False, False, True, False, True]
    assert examples[4]["prompt"] == ATOMTHINK_V1.render("step", "What is A + 1?", ["Step 1: A is 3."])


@pytest.mark.parametrize("family", ["llava", "mllama", "qwen2-vl", "qwen2.5-vl"])
def test_sft_lora_trains_and_the_policy_backend_serves_it(family: str, trained: Trained) -> None:
    if family.startswith("qwen") and not HAS_TORCHVISION:
        pytest.skip(f"{family}: its processor needs torchvision, which cannot import beside the CPU torch here")
    from workers.backends.hf_policy import TransformersPolicy

    out, summary = trained.policy(family)
    assert _went_down(summary["losses"]), summary["losses"]
    assert summary["examples"] == 5 and summary["trainable_parameters"] > 0
    assert json.loads((out / "atomthink.json").read_text()) == {"prompt_preset": "atomthink-v1"}
    assert not (out / "adapter_config.json").exists()  # merged: a plain checkpoint
    policy = TransformersPolicy(str(out), device="cpu", dtype="float32")
    assert policy.preset.name == "atomthink-v1" and policy.multimodal
    from atomthink.protocol import SamplingParams

    request = GenerationRequest("step", "What is A + 4?", [], Image.new("RGB", (64, 48), "white"),
                                SamplingParams(n=2, max_new_tokens=6))  # fmt: skip
    [candidates] = policy.generate([request])
    assert len(candidates) == 2 and all(c.num_tokens > 0 for c in candidates)


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_qwen_vl_models_build_from_config_and_train_lora_text_only(family: str, tmp_path: Path, sft_data: Path) -> None:
    """What runs without torchvision: the model from its config, LoRA on its decoder, Markov SFT on text records."""
    base = build_qwen_vl(tmp_path / "base", family, with_processor=False)
    text_only = tmp_path / "text.jsonl"
    records = [json.loads(line) for line in (sft_data / "sft.jsonl").read_text().splitlines()]
    text_only.write_text("".join(json.dumps({**r, "image": None}) + "\n" for r in records))
    config = json.loads((base / "config.json").read_text())
    assert config["model_type"] == family.replace(".", "_").replace("-", "_")
    cfg = LoraSftConfig(model=str(base), data=[str(text_only)], out=str(tmp_path / "out"), max_steps=8, batch_size=2,
                        grad_accum=1, lr=5e-3, lora_r=8, logging_steps=1, preset="atomthink-v1")  # fmt: skip
    summary = train_lora_sft(cfg)
    assert _went_down(summary["losses"]), summary["losses"]
    assert summary["trainable_parameters"] > 0


@pytest.mark.parametrize("preset", ["math-psa", "qwen-prm"])
def test_prm_lora_trains_and_the_prm_backend_scores_with_it(preset: str, trained: Trained) -> None:
    from workers.backends.hf_prm import TransformersPrm

    out, summary = trained.prm(preset)
    assert _went_down(summary["losses"]), summary["losses"]
    config = json.loads((out / "config.json").read_text())
    expected = "Qwen2ForProcessRewardModel" if preset == "qwen-prm" else "Qwen2ForCausalLM"
    assert config["architectures"] == [expected]
    prm = TransformersPrm(str(out), device="cpu", dtype="float32")  # strict: every weight from the checkpoint
    assert prm.preset.name == preset
    [[two_steps, one_step]] = prm.score(
        [ScoreRequest("What is 3 + 2?", [["3 + 2 = 5", "The answer is 5"], ["3 + 2 = 6"]])]
    )
    assert len(two_steps) == 2 and len(one_step) == 1
    assert all(0.0 <= p <= 1.0 for p in two_steps + one_step)


@pytest.mark.parametrize(("family", "prm_preset"), [("llava", "math-psa"), ("mllama", "qwen-prm")])
def test_a_gateway_solves_with_the_trained_policy_and_prm(
    family: str,
    prm_preset: str,
    trained: Trained,
    sample_png: bytes,
    tmp_path: Path,
) -> None:
    models = {"policy": trained.policy(family)[0], "prm": trained.prm(prm_preset)[0]}
    env = model_env(models, ATOMTHINK_MAX_STEP_TOKENS="8")
    with ServerProcess(["serve"], env, log_path=tmp_path / "serve.log") as server:
        fields = {"question": "What is A + 4?", "mode": "slow", "strategy": "beam", "candidates": "2",
                  "beam_width": "1", "max_steps": "2", "seed": "1"}  # fmt: skip
        response = httpx.post(f"{server.url}/solve", data=fields, files={"image": ("a.png", sample_png)}, timeout=300)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["stats"]["prm_calls"] >= 1 and body["stats"]["policy_calls"] >= 2
        assert body["steps"], body
        health = httpx.get(f"{server.url}/v1/models", timeout=30)
        assert health.status_code == 200
