"""PRM training with LoRA on real checkpoints, in the two layouts the serving backends score with.

* ``math-psa`` (AtomThink v1's PRM, OpenR Math-psa): a causal LM; every step is followed by the tag and the target
  at the tag token is the ``" +"`` or ``" -"`` token: cross-entropy over the vocabulary there, nothing elsewhere.
* ``qwen-prm`` (Qwen2.5-Math-PRM): ``Qwen2ForProcessRewardModel``'s two-class head
  (``workers.backends.prm_models.Qwen2ProcessRewardModel``) at each ``<extra_0>``: cross-entropy over the two
  classes, class 1 = ``+``. A base that is a plain Qwen2 LM gets a fresh head; the head is trained in full
  (``modules_to_save``) while the decoder gets LoRA.

Paths are encoded by ``atomthink.prm_format.encode_path``, the function the PRM backends score with, so the tag
tokenization, the question layout and the score positions are the served ones. Records are the official AmATH-PRM
layout ``{"question", "process", "label": ["+"|"-", ...]}`` (``atomthink train cluster-labels``, ``judge-labels`` and
``negatives`` write it); the steps of ``process`` are split at the preset's tag (with or without Math-psa's leading
space, the official data engine's spelling). The merged output keeps the reference layout (``architectures``
``Qwen2ForProcessRewardModel`` for the head) and declares its PRM preset in ``atomthink.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from atomthink.prm_format import PrmPreset, encode_path, get_prm_preset, label_token_ids
from research.data.records import read_jsonl
from research.training.common import LoraTrainingConfig, lora_config, train_lora
from research.training.step_judge import split_steps

DECODER_PROJECTIONS = r".*layers\.\d+\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class LoraPrmConfig(LoraTrainingConfig):
    """The PRM recipe: ``model`` is a causal LM (``math-psa``), or a Qwen2 LM / Qwen2.5-Math-PRM checkpoint
    (``qwen-prm``); ``data`` holds PRM JSONL files (or folders holding ``prm.jsonl``)."""

    prm_preset: str = "math-psa"
    batch_size: int = 4
    grad_accum: int = 4
    target_modules: str = DECODER_PROJECTIONS


def load_prm_examples(
    paths: list[str], tokenizer: Any, preset: PrmPreset, limit: int | None = None
) -> list[dict[str, list[int]]]:
    """``{"input_ids", "positions", "targets"}`` per record; targets are label token ids (``causal_lm``) or classes."""
    if preset.kind == "causal_lm":
        plus, minus = label_token_ids(tokenizer, preset)
    else:
        plus, minus = 1, 0
    examples: list[dict[str, list[int]]] = []
    for path in paths:
        file = Path(path) / "prm.jsonl" if Path(path).is_dir() else Path(path)
        for record in read_jsonl(file):
            steps = split_steps(record["process"], preset.step_tag)
            labels = record["label"]
            if len(steps) != len(labels):
                raise ValueError(f"{file}: record {record.get('id')} has {len(steps)} steps and {len(labels)} labels")
            ids, positions = encode_path(tokenizer, preset, record["question"], steps)
            examples.append({"input_ids": ids, "positions": positions,
                             "targets": [plus if lab == "+" else minus for lab in labels]})  # fmt: skip
            if limit is not None and len(examples) >= limit:
                return examples
    return examples


class PrmCollator:
    """Right-padded batches; ``labels`` hold the target at each score position and ``-100`` elsewhere."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, e in enumerate(batch):
            ids[row, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
            mask[row, : len(e["input_ids"])] = 1
            labels[row, e["positions"]] = torch.tensor(e["targets"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tag_loss(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the logits at the score positions against their targets (no shift: the logits at the tag
    are the ones the serving backend reads)."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), inputs["labels"].reshape(-1), ignore_index=-100
    )


def _trainer_class() -> Any:
    from transformers import Trainer

    class TagTrainer(Trainer):
        def compute_loss(  # type: ignore[override]
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            loss = tag_loss(model, inputs)
            return (loss, None) if return_outputs else loss

    return TagTrainer


def _load_model(cfg: LoraPrmConfig, preset: PrmPreset, tokenizer: Any, dtype: torch.dtype) -> Any:
    if preset.kind == "causal_lm":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    from transformers import AutoConfig

    from workers.backends.prm_models import Qwen2ProcessRewardModel

    if AutoConfig.from_pretrained(cfg.model).model_type != "qwen2":
        raise ValueError(f"{cfg.model}: the Qwen2ForProcessRewardModel head needs a qwen2 base")
    model = Qwen2ProcessRewardModel.from_pretrained(cfg.model, dtype=dtype)  # a plain LM base: the head starts fresh
    if preset.step_tag not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [preset.step_tag]})
        model.resize_token_embeddings(len(tokenizer))
    return model


def train_lora_prm(cfg: LoraPrmConfig) -> dict[str, Any]:
    from transformers import AutoTokenizer

    preset = get_prm_preset(cfg.prm_preset)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    model = _load_model(cfg, preset, tokenizer, dtype)
    examples = load_prm_examples(cfg.data, tokenizer, preset, cfg.max_records)
    if not examples:
        raise ValueError("no PRM records in " + ", ".join(cfg.data))
    lora = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules,
                       "CAUSAL_LM" if preset.kind == "causal_lm" else None)  # fmt: skip
    if preset.kind == "token_classification":
        lora.modules_to_save = ["score"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    history, trainable = train_lora(
        model, lora, cfg, examples, PrmCollator(pad), tokenizer, {"prm_preset": preset.name}, _trainer_class()
    )
    out = Path(cfg.out)
    if cfg.merge and preset.kind == "token_classification":
        config_path = out / "config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "architectures": ["Qwen2ForProcessRewardModel"]}, indent=2))
    summary = {
        "config": asdict(cfg),
        "examples": len(examples),
        "trainable_parameters": trainable,
        "losses": history,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
