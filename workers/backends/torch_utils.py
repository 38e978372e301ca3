"""Device, dtype and sampling helpers shared by the transformers backends."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from atomthink.protocol import SamplingParams

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


def row_seed(seed: int, index: int) -> int:
    """Seed of candidate ``index`` of a job: distinct per candidate, independent of the batch it runs in."""
    return (seed * 1_000_003 + index * 7919 + 1) % (2**63 - 1)


class PerRowSampler(LogitsProcessor):
    """Samples each row with its own temperature, top-k, top-p and generator, then forces that token.

    ``generate`` runs greedily on the returned scores, so the pick is ours. Every row draws from its own
    ``torch.Generator``, which makes a candidate's text depend only on its seed, not on what it was batched with.
    """

    def __init__(self, rows: Sequence[SamplingParams], row_indices: Sequence[int], device: torch.device) -> None:
        self._temperature = torch.tensor([r.temperature for r in rows], dtype=torch.float32, device=device)
        self._top_p = torch.tensor([r.top_p for r in rows], dtype=torch.float32, device=device)
        self._top_k = [r.top_k for r in rows]
        self._generators = []
        for params, index in zip(rows, row_indices, strict=True):
            generator = torch.Generator(device="cpu")
            generator.manual_seed(row_seed(params.seed, index))
            self._generators.append(generator)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float()
        greedy = self._temperature <= 0
        scaled = logits / torch.where(greedy, torch.ones_like(self._temperature), self._temperature)[:, None]
        vocab = scaled.shape[-1]
        sorted_logits, sorted_ids = torch.sort(scaled, descending=True, dim=-1)
        ranks = torch.arange(vocab, device=scaled.device)[None, :]
        top_k = torch.tensor([k if k > 0 else vocab for k in self._top_k], device=scaled.device)[:, None]
        sorted_logits = sorted_logits.masked_fill(ranks >= top_k, float("-inf"))
        probs = torch.softmax(sorted_logits, dim=-1)
        cumulative = torch.cumsum(probs, dim=-1)
        outside_nucleus = (cumulative - probs) >= self._top_p[:, None]
        probs = probs.masked_fill(outside_nucleus, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
        uniforms = torch.cat([torch.rand(1, generator=g) for g in self._generators]).to(scaled.device)
        cdf = torch.cumsum(probs, dim=-1)
        picked_rank = torch.searchsorted(cdf, uniforms[:, None]).clamp(max=vocab - 1)
        picked = sorted_ids.gather(1, picked_rank).squeeze(1)
        picked = torch.where(greedy, sorted_ids[:, 0], picked)
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, picked[:, None], 0.0)
        return forced  # type: ignore[return-value]
