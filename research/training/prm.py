"""Training of the tiny text-only PRM: a Llama causal LM, cross-entropy on the ``+``/``-`` label token at each tag.

Paths are encoded with ``atomthink.prm_format.encode_path`` (the function the serving code scores with), so the tag
tokenization is identical in training and at inference; the target at each returned position is the label token.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from atomthink.prm_format import TINY_PRM, encode_path, label_token_ids
from research.data.records import read_jsonl, split_process, through_first_error
from research.modeling.tiny import TinyPrmShape, build_tiny_prm, prm_from_policy
from research.training.common import (
    LossLog,
    dir_size_mb,
    length_bucketed_batches,
    lr_factor,
    optimizer_step,
    setup,
)
from research.training.drill import CalcDrill, VerifyDrill


@dataclass
class PrmTrainConfig:
    data: list[str]
    out: str
    seed: int = 0
    steps: int = 2000
    max_minutes: float = 60.0
    stop_after: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    lm_weight: float = 0.5
    """Weight of an auxiliary next-token loss on the tokens of steps labelled ``+`` (correct steps): it teaches the
    PRM what a correct step looks like (the result of ``6 + 3 =``), which the label then compares against."""
    log_every: int = 20
    max_records: int | None = None
    threads: int | None = None
    init_from: str | None = None
    """Continue from this PRM checkpoint."""
    init_from_policy: str | None = None
    """Start from this tiny policy's language model (``prm_from_policy``); ``hidden``/``layers``/``heads`` are
    then the policy's."""
    drill_batch: int = 64
    """Text-only arithmetic lines per step (``research.training.drill``; 0 turns the drill off)."""
    drill_weight: float = 0.5
    verify_batch: int = 0
    """PRM-format ``a op b = r`` lines with ``r`` right or slipped per step (``VerifyDrill``; 0 turns it off)."""
    verify_pretrain_steps: int = 0
    """Optimizer steps on the two drills alone (``drill_batch`` and ``verify_batch``, at least 64 each) before the
    PRM records: the comparison of a written result with the computed one is learned there (its loss leaves chance
    only after about a thousand drill steps) and is then kept by ``verify_batch`` during the main stage."""
    supervise: Literal["all", "first_error", "local"] = "all"
    """``all``: a label at every step (after the first ``-`` every step is ``-``: the prefix can no longer reach the
    answer). ``first_error``: labels up to and including the first ``-`` only; the steps after it, computed from a
    wrong value, get no loss, so a ``-`` always means "this step is wrong" (AtomThink's PRM data marks the corrupted
    step, not what follows it). Measured on the tiny models it did not rank paths better (see the PRM card).
    ``local``: each step labelled by its own validity: in an engine record (it names its ``corruption``) only the
    corrupted step is ``-`` and the steps after it, which continue it consistently, are ``+``; a record without
    that knowledge (rollout labels) is cut after its first ``-`` as in ``first_error``."""


class PrmData:
    def __init__(self, dirs: list[str], tokenizer: Any, max_records: int | None = None, supervise: str = "all") -> None:
        if supervise not in ("all", "first_error", "local"):
            raise ValueError(f"supervise must be 'all', 'first_error' or 'local', not {supervise!r}")
        plus, minus = label_token_ids(tokenizer, TINY_PRM)
        n_tag = len(tokenizer(TINY_PRM.step_tag, add_special_tokens=False)["input_ids"])
        self.examples: list[tuple[list[int], list[int], list[int], list[int]]] = []  # ids, pos, targets, lm_ok
        for d in dirs:
            records = read_jsonl(Path(d) / "prm.jsonl")
            if max_records is not None:
                records = records[:max_records]
            for r in tqdm(records, desc=f"tokenize {Path(d).name}", leave=False):
                steps = split_process(r["process"])
                ids, pos = encode_path(tokenizer, TINY_PRM, r["question"], steps)
                n_question = len(encode_path(tokenizer, TINY_PRM, r["question"], [])[0])
                labels = r["label"]
                if supervise != "all" and "-" in labels:
                    if supervise == "local" and r.get("corruption"):  # the engine knows which step it corrupted
                        first = labels.index("-")
                        labels = ["+"] * first + ["-"] + ["+"] * (len(labels) - first - 1)
                    else:
                        keep = through_first_error(labels)
                        labels, pos = labels[:keep], pos[:keep]
                        ids = ids[: pos[-1] + 1]  # nothing after the last label is needed
                targets = [plus if lab == "+" else minus for lab in labels]
                # positions whose next token lies inside a correct step (auxiliary LM loss); the tag positions
                # carry the label and are left out
                lm_ok = [0] * len(ids)
                begin = n_question
                for k, p_end in enumerate(pos):
                    if r["label"][k] != "+":
                        break
                    for t in range(begin, p_end - n_tag):
                        lm_ok[t] = 1
                    begin = p_end + 1
                self.examples.append((ids, pos, targets, lm_ok))
        self.pad_id = tokenizer.pad_token_id

    def batches(self, batch_size: int, rng: random.Random) -> list[list[int]]:
        order = list(range(len(self.examples)))
        return length_bucketed_batches(order, lambda j: len(self.examples[j][0]), batch_size, rng)

    def collate(self, idx: list[int]) -> dict[str, torch.Tensor]:
        seqs = [self.examples[j] for j in idx]
        width = max(len(s[0]) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        lm_labels = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, (s, pos, tgt, lm_ok) in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
            labels[r, pos] = torch.tensor(tgt)
            for t, ok in enumerate(lm_ok):
                if ok:
                    lm_labels[r, t] = s[t + 1]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "lm_labels": lm_labels}


def prm_loss(model: Any, batch: dict[str, torch.Tensor], lm_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Label loss (CE on the ``+``/``-`` token at each tag) and the auxiliary LM loss on correct steps."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    flat = logits.reshape(-1, logits.shape[-1])
    label = F.cross_entropy(flat, batch["labels"].reshape(-1), ignore_index=-100)
    if lm_weight <= 0:
        return label, torch.zeros(())
    lm = F.cross_entropy(flat, batch["lm_labels"].reshape(-1), ignore_index=-100)
    return label, lm


def train_prm(cfg: PrmTrainConfig, progress: bool = True) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    setup(cfg.seed, cfg.threads)
    if cfg.init_from and cfg.init_from_policy:
        raise ValueError("init_from and init_from_policy are exclusive")
    out = Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    if cfg.init_from:
        shutil.copytree(cfg.init_from, out, ignore=shutil.ignore_patterns("train_log.jsonl", "training_summary.json"))
    elif cfg.init_from_policy:
        prm_from_policy(cfg.init_from_policy, out)
    else:
        build_tiny_prm(out, TinyPrmShape(hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads), seed=cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    model.train()
    t0 = time.time()
    data = PrmData(cfg.data, tokenizer, cfg.max_records, cfg.supervise)
    drill = CalcDrill(tokenizer)
    verify = VerifyDrill(tokenizer)
    prep_s = time.time() - t0
    log = LossLog(out / "train_log.jsonl")
    rng = random.Random(cfg.seed)
    deadline = time.time() + cfg.max_minutes * 60
    pretrain_done = _pretrain_drills(model, cfg, drill, verify, log, rng, deadline, progress)
    opt = _optimizer(model, cfg)
    batches: list[list[int]] = []
    history: list[float] = []
    step = 0
    stopped_early = pretrain_done < cfg.verify_pretrain_steps
    bar = tqdm(total=cfg.steps, desc="prm", disable=not progress)
    while step < cfg.steps and not stopped_early:
        if time.time() > deadline or (cfg.stop_after is not None and step >= cfg.stop_after):
            stopped_early = True
            break
        f = lr_factor(step, cfg.steps, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        if not batches:
            batches = data.batches(cfg.batch_size, rng)
        label_loss, lm_loss = prm_loss(model, data.collate(batches.pop()), cfg.lm_weight)
        dloss = drill.loss(model, cfg.drill_batch, rng)
        vloss = verify.loss(model, cfg.verify_batch, rng)
        loss = label_loss + cfg.lm_weight * lm_loss + cfg.drill_weight * dloss + vloss
        optimizer_step(opt, model, loss)
        history.append(label_loss.item())
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            log.write(
                step=step,
                loss=round(label_loss.item(), 4),
                lm_loss=round(lm_loss.item(), 4),
                drill_loss=round(dloss.item(), 4),
                verify_loss=round(vloss.item(), 4),
                lr_factor=round(f, 4),
            )
            bar.set_postfix(loss=f"{np.mean(history[-20:]):.3f}")
        bar.update(1)
        step += 1
    bar.close()
    wall = time.time() - t0
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "atomthink.json").write_text(json.dumps({"prm_preset": "tiny"}, indent=2) + "\n")
    summary = {
        "config": asdict(cfg),
        "examples": len(data.examples),
        "verify_pretrain_steps_done": pretrain_done,
        "steps_done": step,
        "stopped_early": stopped_early,
        "prep_seconds": round(prep_s, 1),
        "wall_seconds": round(wall, 1),
        "first_loss": history[0] if history else None,
        "last_loss": float(np.mean(history[-50:])) if history else None,
        "size_mb": round(dir_size_mb(out), 2),
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _optimizer(model: Any, cfg: PrmTrainConfig) -> torch.optim.Optimizer:
    """A fresh AdamW over every weight (each stage starts its own, with its own schedule)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))


def _pretrain_drills(
    model: Any,
    cfg: PrmTrainConfig,
    drill: CalcDrill,
    verify: VerifyDrill,
    log: LossLog,
    rng: random.Random,
    deadline: float,
    progress: bool,
) -> int:
    """The drills-only stage (``cfg.verify_pretrain_steps``, own warm-up and cosine schedule); steps done."""
    if cfg.verify_pretrain_steps <= 0:
        return 0
    drill_batch, verify_batch = max(cfg.drill_batch, 64), max(cfg.verify_batch, 64)
    opt = _optimizer(model, cfg)
    step = 0
    for step in tqdm(range(cfg.verify_pretrain_steps), desc="drills", disable=not progress):
        if time.time() > deadline:
            return step
        f = lr_factor(step, cfg.verify_pretrain_steps, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        dloss = drill.loss(model, drill_batch, rng)
        vloss = verify.loss(model, verify_batch, rng)
        optimizer_step(opt, model, cfg.drill_weight * dloss + vloss)
        if step % cfg.log_every == 0 or step == cfg.verify_pretrain_steps - 1:
            log.write(stage="drills", step=step, drill_loss=round(dloss.item(), 4), verify_loss=round(vloss.item(), 4),
                      lr_factor=round(f, 4))  # fmt: skip
    return step + 1
