"""SFT of the tiny LLaVA policy on the data engine's Markov step records (plus direct and CoT records).

Two ideas make a from-scratch tiny LLaVA read the image (see ``shared/notes/tiny-models.md`` for the failures
without them):

* a **perception loss**: every value on the image sits in one 16-pixel cell = one vision patch, and the data engine
  records which glyph each cell holds. The projected feature of every image token is pushed through the (tied)
  LM head and trained with cross-entropy to *be* the embedding of the glyph in its cell (space when empty). The
  decoder then reads a value by copying a token-like vector, which it learns quickly. The loss is used alone for a
  short first stage and kept, down-weighted, during SFT; nothing of it is saved but the trained weights, so the
  checkpoint stays a plain ``LlavaForConditionalGeneration``;
* a higher learning rate for the vision tower and projector than for the decoder;
* a **calculation drill**: every optimizer step also trains the decoder on a batch of short text-only lines
  ``a op b = r`` from the range the families use (loss on ``r``), and the Markov records of calculation and
  conclusion steps are seen ``hard_repeat`` times per epoch. Without them the decoder learned the step format and
  reading but only ~14% of calculation steps (teacher-forced, even on training problems) after 58 minutes.

The SFT loss covers the assistant tokens only. Sequences are built with the same chat template the serving code
uses; ``build_example`` checks that the prompt tokens are a prefix of the training sequence.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from atomthink.prompts import PRESET_FILE, TINY_STEP_DELIMITER, chat_messages
from research.data.records import read_jsonl
from research.modeling.tiny import TinyPolicyShape, build_tiny_policy
from research.training.common import (
    LossLog,
    dir_size_mb,
    length_bucketed_batches,
    lr_factor,
    next_token_loss,
    optimizer_step,
    setup,
)
from research.training.drill import CalcDrill


@dataclass
class PolicyTrainConfig:
    data: list[str]
    out: str
    seed: int = 0
    steps: int = 4000
    perception_steps: int = 300
    read_steps: int = 300
    """Steps on the dense reading records only (after the perception stage, before the full SFT mix)."""
    max_minutes: float = 60.0
    stop_after: int | None = None
    """Stop after this many optimizer steps (the schedule still spans all steps): reproduces a time-limited run."""
    batch_size: int = 32
    lr: float = 1e-3
    vision_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    perception_weight: float = 0.2
    perception_batch: int = 64
    image_size: int = 96
    patch_size: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    kinds: tuple[str, ...] = ("step", "direct", "cot", "read")
    log_every: int = 20
    max_records: int | None = None
    threads: int | None = None
    init_from: str | None = None
    """Continue from this checkpoint (same shapes) instead of a fresh random initialisation."""
    drill_batch: int = 64
    """Text-only arithmetic lines per optimizer step (0 turns the drill off)."""
    drill_weight: float = 1.0
    hard_repeat: int = 2
    """How many times per epoch the calculation and conclusion step records are seen (others once)."""


def target_text(rec: dict[str, Any], eos: str) -> str:
    """The assistant text a record teaches: steps end with the step delimiter, final actions with EOS."""
    gpt = rec["conversations"][1]["value"]
    if rec["kind"] == "step" and not rec["final"]:
        return gpt + TINY_STEP_DELIMITER
    return gpt + eos


def num_image_tokens(processor: Any) -> int:
    size = processor.image_processor.crop_size["height"]
    return (
        (size // processor.patch_size) ** 2
        + processor.num_additional_image_tokens
        - (1 if processor.vision_feature_select_strategy == "default" else 0)
    )


def _expand(ids: list[int], image_id: int, n: int) -> list[int]:
    out: list[int] = []
    for t in ids:
        out.extend([image_id] * n if t == image_id else [t])
    return out


def build_example(processor: Any, prompt: str, target: str) -> tuple[list[int], int]:
    """Token ids of prompt + target (image token expanded) and the length of the prompt part."""
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    n = num_image_tokens(processor)
    prompt_text = processor.apply_chat_template(
        chat_messages(prompt, has_image=True), add_generation_prompt=True, tokenize=False
    )
    full_text = processor.apply_chat_template(chat_messages(prompt, True, answer=target), tokenize=False)
    p_ids = _expand(tok(prompt_text, add_special_tokens=False)["input_ids"], image_id, n)
    f_ids = _expand(tok(full_text, add_special_tokens=False)["input_ids"], image_id, n)
    if f_ids[: len(p_ids)] != p_ids:
        raise ValueError("training sequence does not start with the inference prompt tokens")
    return f_ids, len(p_ids)


def _pixel_values(processor: Any, paths: list[Path]) -> torch.Tensor:
    chunks = []
    for i in range(0, len(paths), 256):
        images = [Image.open(p).convert("RGB") for p in paths[i : i + 256]]
        chunks.append(processor.image_processor(images=images, return_tensors="pt")["pixel_values"].half())
    return torch.cat(chunks)


class PolicyData:
    """Tokenized SFT records, pixel values and perception targets of one or more data directories."""

    def __init__(self, dirs: list[str], processor: Any, kinds: tuple[str, ...], max_records: int | None = None):
        tok = processor.tokenizer
        self.eos = tok.eos_token
        image_paths: list[Path] = []
        index: dict[str, int] = {}
        cells: list[list[int]] = []
        roles: list[list[int]] = []
        self.examples: list[tuple[list[int], int, int]] = []  # ids, prompt length, image index
        self.kinds: list[str] = []
        self.hard: list[bool] = []
        for d in dirs:
            root = Path(d)
            for prob in read_jsonl(root / "problems.jsonl"):
                key = str(root / prob["image"])
                index[key] = len(image_paths)
                image_paths.append(root / prob["image"])
                cells.append([tok.convert_tokens_to_ids(ch) for ch in prob["cells"]])
                roles.append([tok.convert_tokens_to_ids(ch) for ch in prob.get("roles", " " * len(prob["cells"]))])
            records = [r for r in read_jsonl(root / "sft.jsonl") if r["kind"] in kinds]
            if max_records is not None:
                records = records[:max_records]
            for rec in tqdm(records, desc=f"tokenize {root.name}", leave=False):
                ids, plen = build_example(processor, rec["conversations"][0]["value"], target_text(rec, self.eos))
                self.examples.append((ids, plen, index[str(root / rec["image"])]))
                self.kinds.append(rec["kind"])
                self.hard.append(rec["kind"] == "step" and rec.get("capability") in HARD_CAPABILITIES)
        used = sorted({e[2] for e in self.examples})
        self.image_paths = image_paths
        self.pixels = _pixel_values(processor, image_paths)
        self.cells = torch.stack([torch.tensor(cells, dtype=torch.long), torch.tensor(roles, dtype=torch.long)], -1)
        self.used_images = used
        self.pad_id = tok.pad_token_id

    def batches(
        self, batch_size: int, rng: random.Random, kinds: set[str] | None = None, hard_repeat: int = 1
    ) -> list[list[int]]:
        """Length-bucketed random batches covering every example (of ``kinds``) once, hard ones ``hard_repeat``
        times."""
        order = [i for i in range(len(self.examples)) if kinds is None or self.kinds[i] in kinds]
        order += [i for i in order if self.hard[i]] * (hard_repeat - 1)
        return length_bucketed_batches(order, lambda j: len(self.examples[j][0]), batch_size, rng)

    def collate(self, idx: list[int]) -> dict[str, torch.Tensor]:
        seqs = [self.examples[j] for j in idx]
        width = max(len(s[0]) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, (s, plen, _) in enumerate(seqs):
            off = width - len(s)  # left padding, as at inference
            ids[r, off:] = torch.tensor(s)
            labels[r, off + plen :] = torch.tensor(s[plen:])
            mask[r, off:] = 1
        images = torch.tensor([s[2] for s in seqs])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, "images": images}


HARD_CAPABILITIES = ("calculation", "conclusion")


def image_features(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image-token features, (batch, tokens, hidden)."""
    out = model.model.get_image_features(
        pixel_values=pixel_values,
        vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
    )
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats


def perception_loss(model: Any, feats: torch.Tensor, cells: torch.Tensor, space_id: int) -> tuple[torch.Tensor, float]:
    """CE of LM-head(image feature) against each cell's content; returns the loss and the glyph accuracy.

    ``cells[..., 0]`` is the glyph drawn in the cell, ``cells[..., 1]`` the letter that names the value in the
    steps (bar label, side letter, item initial) or space. A value cell's target is half glyph, half role letter,
    so its feature carries both *what* it shows and *which* value it is: the decoder then finds "bar C" by
    matching the letter C and copies the digit. Empty cells aim at the space token with a small weight.
    """
    logits = model.lm_head(feats)
    logp = logits.reshape(-1, logits.shape[-1]).log_softmax(-1)
    glyph_t = cells[..., 0].reshape(-1)
    role_t = cells[..., 1].reshape(-1)
    has_role = role_t != space_id
    nll_glyph = -logp.gather(1, glyph_t[:, None])[:, 0]
    nll_role = -logp.gather(1, role_t[:, None])[:, 0]
    losses = torch.where(has_role, 0.5 * nll_glyph + 0.5 * nll_role, nll_glyph)
    weight = torch.where(glyph_t == space_id, 0.1, 1.0)
    glyph = glyph_t != space_id
    if glyph.any():
        masked = logp[glyph].clone()
        masked[torch.arange(len(masked)), role_t[glyph]] = -1e9  # the glyph must beat everything but its role
        acc = (masked.argmax(-1) == glyph_t[glyph]).float().mean().item()
    else:
        acc = 1.0
    return (losses * weight).sum() / weight.sum(), acc


def sft_forward(model: Any, batch: dict[str, torch.Tensor], pixels: torch.Tensor, image_id: int) -> tuple:
    feats = image_features(model, pixels)
    embeds = model.get_input_embeddings()(batch["input_ids"])
    is_image = batch["input_ids"] == image_id
    embeds = embeds.masked_scatter(is_image.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]).to(embeds.dtype))
    out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
    return next_token_loss(out.logits, batch["labels"]), feats


def train_policy(cfg: PolicyTrainConfig, progress: bool = True) -> dict[str, Any]:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    setup(cfg.seed, cfg.threads)
    out = Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    shape = TinyPolicyShape(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_hidden=cfg.vision_hidden,
        vision_layers=cfg.vision_layers,
        text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers,
        text_heads=cfg.text_heads,
    )
    if cfg.init_from:
        shutil.copytree(cfg.init_from, out, ignore=shutil.ignore_patterns("train_log.jsonl", "training_summary.json"))
    else:
        build_tiny_policy(out, shape, seed=cfg.seed)
    processor = AutoProcessor.from_pretrained(out)
    model = LlavaForConditionalGeneration.from_pretrained(out)
    model.train()
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    space_id = tok.convert_tokens_to_ids(" ")

    t0 = time.time()
    data = PolicyData(cfg.data, processor, cfg.kinds, cfg.max_records)
    drill = CalcDrill(tok)
    prep_s = time.time() - t0

    vision_params = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    vision_ids = {id(p) for p in vision_params}
    text_params = [p for p in model.parameters() if id(p) not in vision_ids]
    opt = torch.optim.AdamW(
        [
            {"params": vision_params, "lr": cfg.vision_lr, "base": cfg.vision_lr},
            {"params": text_params, "lr": cfg.lr, "base": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
        betas=(0.9, 0.98),
    )
    log = LossLog(out / "train_log.jsonl")
    rng = random.Random(cfg.seed)
    used = data.used_images
    total = cfg.perception_steps + cfg.read_steps + cfg.steps
    read_batches: list[list[int]] = []
    deadline = time.time() + cfg.max_minutes * 60
    batches: list[list[int]] = []
    history: list[float] = []
    first_loss = None
    step = 0
    bar = tqdm(total=total, desc="policy", disable=not progress)
    stopped_early = False
    while step < total:
        if time.time() > deadline or (cfg.stop_after is not None and step >= cfg.stop_after):
            stopped_early = True
            break
        f = lr_factor(step, total, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = g["base"] * f
        if step < cfg.perception_steps:
            img_idx = torch.tensor([used[rng.randrange(len(used))] for _ in range(cfg.perception_batch)])
            feats = image_features(model, data.pixels[img_idx].float())
            ploss, pacc = perception_loss(model, feats, data.cells[img_idx], space_id)
            loss = ploss
            sft = float("nan")
        else:
            if step < cfg.perception_steps + cfg.read_steps:
                if not read_batches:
                    read_batches = data.batches(cfg.batch_size, rng, {"read"})
                batch = data.collate(read_batches.pop())
            else:
                if not batches:
                    batches = data.batches(cfg.batch_size, rng, hard_repeat=cfg.hard_repeat)
                batch = data.collate(batches.pop())
            sft_loss, feats = sft_forward(model, batch, data.pixels[batch["images"]].float(), image_id)
            ploss, pacc = perception_loss(model, feats, data.cells[batch["images"]], space_id)
            loss = sft_loss + cfg.perception_weight * ploss
            sft = sft_loss.item()
            history.append(sft)
            if first_loss is None:
                first_loss = sft
        dloss = drill.loss(model, cfg.drill_batch, rng)
        loss = loss + cfg.drill_weight * dloss
        optimizer_step(opt, model, loss)
        if step % cfg.log_every == 0 or step == total - 1:
            log.write(
                step=step,
                loss=round(loss.item(), 4),
                sft_loss=None if sft != sft else round(sft, 4),
                perception_loss=round(ploss.item(), 4),
                perception_acc=round(pacc, 4),
                drill_loss=round(dloss.item(), 4),
                lr_factor=round(f, 4),
            )
            bar.set_postfix(sft=f"{sft:.3f}", read=f"{pacc:.2f}", drill=f"{dloss.item():.3f}")
        bar.update(1)
        step += 1
    bar.close()
    wall = time.time() - t0
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / PRESET_FILE).write_text(json.dumps({"prompt_preset": "tiny"}, indent=2) + "\n")
    summary = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "examples": len(data.examples),
        "images": len(used),
        "steps_done": step,
        "stopped_early": stopped_early,
        "prep_seconds": round(prep_s, 1),
        "wall_seconds": round(wall, 1),
        "first_sft_loss": first_loss,
        "last_sft_loss": float(np.mean(history[-50:])) if history else None,
        "size_mb": round(dir_size_mb(out), 2),
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
