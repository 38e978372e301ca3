"""PRM model classes the transformers backend loads, and the strict loading every PRM goes through.

``Qwen2ProcessRewardModel`` is our own class with the layout of Qwen2.5-Math-PRM's remote-code class
``Qwen2ForProcessRewardModel`` (its ``auto_map``): a Qwen2 decoder and a two-layer head
``Sequential(Linear(hidden, hidden), ReLU(), Linear(hidden, 2))`` whose weights are ``score.0.*`` and ``score.2.*``.
``AutoModelForTokenClassification`` would build a one-layer ``score`` head instead and silently score with random
weights; here a checkpoint whose weights do not match the class is refused, naming the keys.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

PROCESS_REWARD_ARCHITECTURES = ("Qwen2ForProcessRewardModel",)


class PrmLoadError(ValueError):
    """A PRM checkpoint whose weights do not fit the model class that would score with it."""


class Qwen2ProcessRewardModel(Qwen2PreTrainedModel):
    """Qwen2 decoder with Qwen2.5-Math-PRM's two-class MLP head; logits per token, class 1 = step is correct."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = 2
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, self.num_labels),
        )
        self.post_init()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> TokenClassifierOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))


def _checked(loaded: Any, model_path: str) -> Any:
    model, info = loaded
    problems = {
        name: sorted(str(key) for key in info.get(name) or [])
        for name in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    problems = {name: keys for name, keys in problems.items() if keys}
    if problems:
        detail = "; ".join(
            f"{name}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}" for name, keys in problems.items()
        )
        raise PrmLoadError(
            f"PRM checkpoint {model_path} does not match {type(model).__name__} ({detail}); "
            "its scores would come from untrained weights"
        )
    return model


def load_prm_model(model_path: str, kind: str, dtype: torch.dtype) -> Any:
    """The PRM model for ``kind`` (``causal_lm`` or ``token_classification``), with every weight from the checkpoint."""
    if kind == "causal_lm":
        return _checked(
            AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, output_loading_info=True), model_path
        )
    config = AutoConfig.from_pretrained(model_path)
    if set(getattr(config, "architectures", None) or ()) & set(PROCESS_REWARD_ARCHITECTURES):
        if config.model_type != "qwen2":
            raise PrmLoadError(
                f"{model_path}: a process reward head on model_type {config.model_type!r} is not supported"
            )
        loaded = Qwen2ProcessRewardModel.from_pretrained(model_path, dtype=dtype, output_loading_info=True)
    else:
        loaded = AutoModelForTokenClassification.from_pretrained(model_path, dtype=dtype, output_loading_info=True)
    model = _checked(loaded, model_path)
    if getattr(model, "num_labels", 2) != 2:
        raise PrmLoadError(f"{model_path}: a token-classification PRM needs 2 labels, not {model.num_labels}")
    return model
