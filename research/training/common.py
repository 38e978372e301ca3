"""Shared training helpers: seeding, CPU threads, schedules, loss logs, the LoRA recipes' trainer."""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from atomthink.prompts import PRESET_FILE
from atomthink.settings import Settings


def setup(seed: int, threads: int | None = None) -> None:
    """Seeds every generator and sets torch's threads: ``threads``, else the ``torch_threads`` setting
    (``ATOMTHINK_TORCH_THREADS``), else 2."""
    threads = threads or Settings().torch_threads or 2
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position's logits against the next token's label (``-100`` = not trained)."""
    shifted = logits[:, :-1]
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def optimizer_step(opt: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor) -> None:
    """One update: gradients of ``loss``, clipped to norm 1, applied by ``opt``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class LossLog:
    """Appends one JSON line per logged step to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.start = time.time()

    def write(self, **fields: Any) -> None:
        fields = {"elapsed_s": round(time.time() - self.start, 1), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(fields) + "\n")


def dir_size_mb(path: str | Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def length_bucketed_batches(
    order: list[int], length: Callable[[int], int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Shuffle ``order``, sort chunks of 50 batches by ``length`` (less padding), cut batches, shuffle the batches."""
    rng.shuffle(order)
    chunk = batch_size * 50
    out: list[list[int]] = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i : i + chunk], key=length)
        out.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
    rng.shuffle(out)
    return out


@dataclass
class LoraTrainingConfig:
    """What the LoRA recipes (``lora_sft``, ``lora_prm``) share: the base, the data, the output and the trainer's
    schedule."""

    model: str
    """Base checkpoint folder (or hub id on a machine that reaches a hub)."""
    data: list[str]
    """Record files (JSONL), or folders holding the recipe's file."""
    out: str
    max_steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 8
    lr: float = 1e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = ""
    """Regular expression of the modules LoRA adapts (each recipe sets its default)."""
    merge: bool = True
    """Save the merged model (served as any checkpoint); False saves the LoRA adapter only."""
    bf16: bool = False
    gradient_checkpointing: bool = False
    max_records: int | None = None
    logging_steps: int = 10
    seed: int = 0


def lora_config(cfg_r: int, alpha: int, dropout: float, target: str, task_type: str | None = "CAUSAL_LM") -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg_r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target, task_type=task_type)


def training_arguments(out: Path, cfg: LoraTrainingConfig) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(10, max(0, cfg.max_steps // 10)),
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=cfg.seed,
        disable_tqdm=True,
    )


def save_output(model: Any, processor: Any, out: Path, merge: bool, presets: dict[str, str]) -> None:
    """The merged checkpoint (or adapter), the processor or tokenizer, and the presets the service reads."""
    if merge:
        model = model.merge_and_unload()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / PRESET_FILE).write_text(json.dumps(presets, indent=2) + "\n")
    shutil.rmtree(out / "trainer", ignore_errors=True)


def losses(log_history: list[dict[str, Any]]) -> list[float]:
    return [float(entry["loss"]) for entry in log_history if "loss" in entry]


def train_lora(
    model: Any,
    lora: Any,
    cfg: LoraTrainingConfig,
    examples: Sequence[Any],
    collator: Callable[[list[Any]], dict[str, torch.Tensor]],
    saver: Any,
    presets: dict[str, str],
    trainer_class: Any = None,
) -> tuple[list[float], int]:
    """The LoRA recipes' training (``lora_sft``, ``lora_prm``): ``lora`` on ``model``, ``transformers.Trainer`` (or
    ``trainer_class``) over ``examples`` with ``cfg``'s schedule, the result saved to ``cfg.out`` with ``saver`` (the
    processor or tokenizer) and ``presets`` (merged unless ``cfg.merge`` is off). Returns the logged losses and the
    count of trained parameters."""
    from peft import get_peft_model
    from transformers import Trainer

    model = get_peft_model(model, lora)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = (trainer_class or Trainer)(
        model=model, args=training_arguments(out, cfg), train_dataset=examples, data_collator=collator
    )
    trainer.train()
    history = losses(trainer.state.log_history)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.eval()
    save_output(model, saver, out, cfg.merge, presets)
    return history, trainable
