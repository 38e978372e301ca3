"""The calculation drill: short text-only ``a op b = r`` lines that teach a tiny decoder the families' arithmetic.

A tiny model sees few calculation tokens in the step records (most tokens are copied template text), so both the
policy and the PRM also train, at every optimizer step, on a batch of such lines with the loss on ``r``. The PRM
needs the arithmetic too: it must know ``9 + 7`` to see that ``9 + 7 = 10`` is wrong.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

from atomthink.prm_format import TINY_PRM, encode_path, label_token_ids
from atomthink.prompts import TINY_STEP_DELIMITER
from research.data.engine import arithmetic_facts
from research.training.common import next_token_loss


class CalcDrill:
    """Text-only ``a op b = r`` lines over the families' arithmetic range; the loss is on ``r`` and the newline.

    An example packs 1 to ``max_lines`` random lines, so a result is also predicted after other text, as a
    calculation step is after the question and the earlier steps.
    """

    def __init__(self, tokenizer: Any, max_lines: int = 4) -> None:
        self.lines: list[tuple[list[int], int]] = []
        for a, op, b, r in arithmetic_facts():
            prompt = f"{a} {op} {b} = "
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = tokenizer(f"{prompt}{r}{TINY_STEP_DELIMITER}", add_special_tokens=False)["input_ids"]
            if ids[: len(p_ids)] != p_ids:
                raise ValueError("drill prompt is not a token prefix of the drill line")
            self.lines.append((ids, len(p_ids)))
        self.max_lines = max_lines
        self.pad_id = tokenizer.pad_token_id

    def _example(self, rng: random.Random) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        for _ in range(rng.randint(1, self.max_lines)):
            line, plen = self.lines[rng.randrange(len(self.lines))]
            ids += line
            labels += [-100] * plen + line[plen:]
        return ids, labels

    def batch(self, size: int, rng: random.Random) -> dict[str, torch.Tensor]:
        seqs = [self._example(rng) for _ in range(size)]
        width = max(len(s) for s, _ in seqs)
        ids = torch.full((size, width), self.pad_id, dtype=torch.long)
        labels = torch.full((size, width), -100, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for r, (s, lab) in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            labels[r, : len(s)] = torch.tensor(lab)
            mask[r, : len(s)] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    def loss(self, model: Any, size: int, rng: random.Random) -> torch.Tensor:
        """The model's loss on a fresh batch of ``size`` examples (zero, and no forward pass, when ``size`` is 0)."""
        if size <= 0:
            return torch.zeros(())
        batch = self.batch(size, rng)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return next_token_loss(logits, batch["labels"])


SLIPS = (-10, -2, -1, 1, 2, 10)


class VerifyDrill:
    """The PRM's verification drill: PRM-format paths of 1 to ``max_lines`` lines ``a op b = r``, each followed by
    the step tag and labelled ``+`` when ``r`` is right and ``-`` when it is slipped (half of the lines, by one of
    ``SLIPS``). The generative drill teaches the PRM to compute ``r``; this one teaches its label head to compare the
    written ``r`` with it.
    """

    def __init__(self, tokenizer: Any, max_lines: int = 4) -> None:
        self.tokenizer = tokenizer
        self.facts = arithmetic_facts()
        self.plus, self.minus = label_token_ids(tokenizer, TINY_PRM)
        self.max_lines = max_lines
        self.pad_id = tokenizer.pad_token_id

    def _example(self, rng: random.Random) -> tuple[list[int], list[int], list[int]]:
        lines, targets = [], []
        for _ in range(rng.randint(1, self.max_lines)):
            a, op, b, r = self.facts[rng.randrange(len(self.facts))]
            wrong = rng.random() < 0.5
            shown = r + rng.choice([d for d in SLIPS if r + d >= 0]) if wrong else r
            lines.append(f"{a} {op} {b} = {shown}")
            targets.append(self.minus if wrong else self.plus)
        ids, pos = encode_path(self.tokenizer, TINY_PRM, "", lines)
        return ids, pos, targets

    def loss(self, model: Any, size: int, rng: random.Random) -> torch.Tensor:
        """CE of the label token at every tag of a fresh batch (zero, and no forward pass, when ``size`` is 0)."""
        if size <= 0:
            return torch.zeros(())
        seqs = [self._example(rng) for _ in range(size)]
        width = max(len(ids) for ids, _, _ in seqs)
        ids_t = torch.full((size, width), self.pad_id, dtype=torch.long)
        labels = torch.full((size, width), -100, dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        for row, (ids, pos, targets) in enumerate(seqs):
            ids_t[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            labels[row, pos] = torch.tensor(targets)
        logits = model(input_ids=ids_t, attention_mask=mask).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
