"""Shared training helpers: seeding, CPU threads, schedules, loss logs."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
