"""Qwen2.5-Math-PRM's head through the serving code: a tiny checkpoint with the reference layout loads and scores
with its real weights; a checkpoint whose head does not match is refused, naming the keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForTokenClassification
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

from workers.backends.base import ScoreRequest
from workers.backends.hf_prm import TransformersPrm
from workers.backends.prm_models import PrmLoadError, Qwen2ProcessRewardModel

WORDS = [
    *("please", "reason", "step", "by", "and", "put", "your", "final", "answer", "within", "\\boxed{}."),
    *("what", "is", "2", "+", "3", "?", "=", "5", "6", "the"),
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2.5-Math-PRM-7B's config.json names this class (remote code we never run) in both fields.
REFERENCE_CONFIG = {
    "architectures": ["Qwen2ForProcessRewardModel"],
    "auto_map": {
        "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
        "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
    },
}


def _tokenizer(out: Path) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<unk>", *WORDS, "system", "user", "assistant", "\n"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return tokenizer


def _config(vocab_size: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        num_labels=2,
    )


def _save_with_reference_layout(model: torch.nn.Module, out: Path) -> None:
    model.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, **REFERENCE_CONFIG}))
    (out / "atomthink.json").write_text(json.dumps({"prm_preset": "qwen-prm"}))


@pytest.fixture(scope="module")
def reference_prm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qwen-prm")
    tokenizer = _tokenizer(out)
    torch.manual_seed(0)
    model = Qwen2ProcessRewardModel(_config(len(tokenizer)))
    for layer in (model.score[0], model.score[2]):
        torch.nn.init.normal_(layer.weight, std=1.0)
        torch.nn.init.normal_(layer.bias, std=1.0)
    _save_with_reference_layout(model, out)
    return out


def test_the_checkpoint_has_the_reference_head_layout(reference_prm: Path) -> None:
    keys = set(load_file(reference_prm / "model.safetensors"))
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= keys
    assert not any(k.startswith("score.") and k.count(".") == 1 for k in keys)


def test_serving_scores_are_the_probabilities_computed_by_hand(reference_prm: Path) -> None:
    prm = TransformersPrm(str(reference_prm), device="cpu", dtype="float32")
    question, steps = "what is 2 + 3 ?", ["2 + 3 = 5", "the final answer is 5"]
    [[served]] = prm.score([ScoreRequest(question, [steps])])

    weights = load_file(reference_prm / "model.safetensors")
    tokenizer = prm.tokenizer
    text = (
        "<|im_start|>system\nplease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{'<extra_0>'.join(steps)}<extra_0><|im_end|>\n"
    )
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    sep = tokenizer.convert_tokens_to_ids("<extra_0>")
    with torch.no_grad():
        hidden = Qwen2Model.from_pretrained(reference_prm).eval()(input_ids=ids).last_hidden_state[0]
    at_sep = hidden[ids[0] == sep]
    layer1 = torch.relu(at_sep @ weights["score.0.weight"].T + weights["score.0.bias"])
    logits = layer1 @ weights["score.2.weight"].T + weights["score.2.bias"]
    expected = torch.softmax(logits, dim=-1)[:, 1].tolist()
    assert served == pytest.approx(expected, abs=1e-5)
    assert len(set(round(p, 3) for p in served)) == 2  # the head matters: two different steps, two scores


def test_a_checkpoint_whose_head_does_not_match_is_refused(tmp_path: Path) -> None:
    tokenizer = _tokenizer(tmp_path)
    torch.manual_seed(0)
    one_layer = Qwen2ForTokenClassification(_config(len(tokenizer)))  # score.weight / score.bias
    _save_with_reference_layout(one_layer, tmp_path)
    with pytest.raises(PrmLoadError) as refused:
        TransformersPrm(str(tmp_path), device="cpu", dtype="float32")
    message = str(refused.value)
    assert "missing_keys: score.0.bias, score.0.weight, score.2.bias, score.2.weight" in message
    assert "unexpected_keys: score.bias, score.weight" in message


def test_a_token_classification_checkpoint_without_its_head_is_refused(tmp_path: Path) -> None:
    tokenizer = _tokenizer(tmp_path)
    Qwen2Model(_config(len(tokenizer))).save_pretrained(tmp_path)  # decoder only: no score weights at all
    (tmp_path / "atomthink.json").write_text(json.dumps({"prm_preset": "qwen-prm"}))
    with pytest.raises(PrmLoadError, match="missing_keys: score.bias, score.weight"):
        TransformersPrm(str(tmp_path), device="cpu", dtype="float32")
