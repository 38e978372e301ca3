"""PRM backends on Hugging Face transformers: causal-LM ``+``/``-`` at a step tag, or token classification."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoTokenizer

from atomthink.context import PrmWindow
from atomthink.prm_format import encode_path, get_prm_preset, label_token_ids
from atomthink.prompts import read_checkpoint_presets
from workers.backends.base import ScoreRequest
from workers.backends.prm_models import load_prm_model
from workers.backends.torch_utils import resolve_device, resolve_dtype


class TransformersPrm:
    """Scores all steps of all paths of a batch in one forward pass (right-padded, causal)."""

    def __init__(self, model_path: str, *, preset: str = "auto", device: str = "auto", dtype: str = "auto") -> None:
        if preset == "auto":
            preset = read_checkpoint_presets(model_path).get("prm_preset", "math-psa")
        self.preset = get_prm_preset(preset)
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
        self.model: Any = load_prm_model(model_path, self.preset.kind, torch_dtype)
        self.label_ids: tuple[int, int] | None = (
            label_token_ids(self.tokenizer, self.preset) if self.preset.kind == "causal_lm" else None
        )
        self.model.to(self.device).eval()
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.window = PrmWindow.from_checkpoint(model_path, preset)  # own tokenizer: scoring runs in a thread
        self._calls = 0
        self._lock = threading.Lock()

    @property
    def model_calls(self) -> int:
        return self._calls

    def fit(self, request: ScoreRequest) -> None:
        """``ContextTooLong`` when a path does not fit the window (``atomthink.context``)."""
        if self.window is not None:
            self.window.fit(request)

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[list[float]]]:
        encoded = [
            encode_path(self.tokenizer, self.preset, request.question, path)
            for request in requests
            for path in request.paths
        ]
        flat_scores = self._score_encoded(encoded) if encoded else []
        results: list[list[list[float]]] = []
        offset = 0
        for request in requests:
            results.append(flat_scores[offset : offset + len(request.paths)])
            offset += len(request.paths)
        return results

    def _score_encoded(self, encoded: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        with self._lock, torch.inference_mode():
            self._calls += 1
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            ).logits.float()
        scores: list[list[float]] = []
        for row, (_, positions) in enumerate(encoded):
            at_tags = logits[row, positions]
            if self.label_ids is not None:
                pair = at_tags[:, list(self.label_ids)]
                probs = torch.softmax(pair, dim=-1)[:, 0]
            else:
                probs = torch.softmax(at_tags, dim=-1)[:, 1]
            scores.append([round(float(p), 6) for p in probs.cpu()])
        return scores
