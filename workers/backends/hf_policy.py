"""Policy backend on Hugging Face transformers: any image-text-to-text checkpoint, or a text-only causal LM."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    LogitsProcessorList,
)

from atomthink.context import PolicyWindow, render_prompt_text
from atomthink.prompts import resolve_prompt_preset
from atomthink.protocol import Candidate, FinishReason, SamplingParams
from workers.backends.base import GenerationRequest
from workers.backends.torch_utils import PerRowSampler, resolve_device, resolve_dtype

log = logging.getLogger(__name__)


def token_logprobs(
    logits: Sequence[torch.Tensor], generated: torch.Tensor, ks: Sequence[int | None]
) -> list[tuple[list[float], list[list[float]]] | None]:
    """Per row (None where ``ks`` says no): the sampled token's log-probability and the ``k`` highest ones at each
    generated position, from ``generate``'s raw ``logits`` (one ``(rows, vocab)`` tensor per position)."""
    if not logits:
        return [None if k is None else ([], []) for k in ks]
    top_k = max((k for k in ks if k is not None), default=0)
    picked, tops = [], []
    for position, step_logits in enumerate(logits):
        logprobs = torch.log_softmax(step_logits.float(), dim=-1)
        picked.append(logprobs.gather(1, generated[:, position : position + 1]).squeeze(1))
        tops.append(torch.topk(logprobs, k=top_k, dim=-1).values if top_k else logprobs[:, :0])
    picked_rows = torch.stack(picked, dim=1).tolist()
    top_rows = torch.stack(tops, dim=1).tolist()
    return [
        None if k is None else (picked_rows[row], [values[:k] for values in top_rows[row]]) for row, k in enumerate(ks)
    ]


def with_logprobs(candidate: Candidate, picked: Sequence[float], top: Sequence[Sequence[float]]) -> Candidate:
    """``candidate`` with the log-probabilities of its ``num_tokens`` generated tokens (padding after EOS dropped)."""
    n = candidate.num_tokens
    return candidate.model_copy(
        update={"token_logprobs": list(picked[:n]), "top_logprobs": [list(values) for values in top[:n]]}
    )


class TransformersPolicy:
    """Generates every candidate of every request of a batch in one ``generate`` call per input shape group.

    Groups: requests with and without an image, and step prompts (stop at the delimiter) versus whole answers.
    Candidates of one request are rows of the same call; each row samples with its own seeded generator.
    """

    def __init__(self, model_path: str, *, preset: str = "auto", device: str = "auto", dtype: str = "auto") -> None:
        self.device = resolve_device(device)
        self.preset = resolve_prompt_preset(preset, model_path)
        torch_dtype = resolve_dtype(dtype, self.device)
        config = AutoConfig.from_pretrained(model_path)
        self.multimodal = hasattr(config, "vision_config")
        if self.multimodal:
            self.processor: Any = AutoProcessor.from_pretrained(model_path)
            self.tokenizer: Any = self.processor.tokenizer
            self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch_dtype)
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = Path(model_path).name
        # the window counts with a tokenizer of its own: a fast tokenizer's padding is state of the object, and
        # counting on the event loop while generate() pads in its thread made batches fail (found by tools/fuzz.py)
        self.window: PolicyWindow | None = None
        try:
            self.window = PolicyWindow.from_checkpoint(model_path, preset)
        except ValueError as exc:  # no tokenizer.json, or a processor whose image positions it cannot count
            log.warning("no context check of the policy: %s", exc)
        self._calls = 0
        self._lock = threading.Lock()

    @property
    def model_calls(self) -> int:
        return self._calls

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        results: list[list[Candidate]] = [[] for _ in requests]
        groups: dict[tuple[bool, bool, int], list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            with_image = request.image is not None and self.multimodal
            groups[(with_image, request.kind == "step", request.sampling.max_new_tokens)].append(i)
        for (with_image, stop_at_delimiter, max_new_tokens), indices in groups.items():
            batch = [requests[i] for i in indices]
            for i, candidates in zip(
                indices,
                self._generate_group(batch, with_image, stop_at_delimiter, max_new_tokens),
                strict=True,
            ):
                results[i] = candidates
        return results

    def _prompt_text(self, request: GenerationRequest, with_image: bool) -> str:
        """The prompt (``with_image`` is ``request.image is not None and self.multimodal``, as its group says)."""
        assert with_image == (request.image is not None and self.multimodal)
        owner = self.processor if self.multimodal else self.tokenizer
        return render_prompt_text(owner, self.preset, request, multimodal=self.multimodal)

    def fit(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` cut to the context window, or ``ContextTooLong`` (``atomthink.context``)."""
        return self.window.fit(request) if self.window is not None else request

    def _generate_group(
        self,
        batch: Sequence[GenerationRequest],
        with_image: bool,
        stop_at_delimiter: bool,
        max_new_tokens: int,
    ) -> list[list[Candidate]]:
        texts: list[str] = []
        images = []
        rows: list[SamplingParams] = []
        row_indices: list[int] = []
        for request in batch:
            text = self._prompt_text(request, with_image)
            for index in range(request.sampling.n):
                texts.append(text)
                rows.append(request.sampling)
                row_indices.append(index)
                if with_image:
                    images.append(request.image)
        if with_image:
            # Mllama's processor takes the images of each prompt as a list of their own (one per prompt here)
            nested = type(self.processor).__name__.startswith("Mllama")
            inputs = self.processor(
                images=[[image] for image in images] if nested else images,
                text=texts,
                return_tensors="pt",
                padding=True,
                padding_side="left",
            )
        else:
            inputs = self.tokenizer(
                texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
            )
        inputs = inputs.to(self.device)
        kwargs: dict[str, Any] = {}
        if stop_at_delimiter and self.preset.step_delimiter is not None:  # None: the step ends at EOS
            kwargs = {"stop_strings": [self.preset.step_delimiter], "tokenizer": self.tokenizer}
        sampler = PerRowSampler(rows, row_indices, self.device)
        wants_logprobs = any(r.logprobs is not None for r in rows)
        if wants_logprobs:  # raw logits of every generated position, before our sampler forces its pick
            kwargs |= {"output_logits": True, "return_dict_in_generate": True}
        with self._lock, torch.inference_mode():
            self._calls += 1
            output = self.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                logits_processor=LogitsProcessorList([sampler]),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
                **kwargs,
            )
        sequences = output.sequences if wants_logprobs else output
        generated = sequences[:, inputs["input_ids"].shape[1] :]
        new_tokens = generated.tolist()
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        candidates = [
            self._to_candidate(ids, stop_at_delimiter, max_new_tokens).model_copy(update={"prompt_tokens": int(used)})
            for ids, used in zip(new_tokens, prompt_lengths, strict=True)
        ]
        if wants_logprobs:
            reports = token_logprobs(output.logits, generated, [r.logprobs for r in rows])
            candidates = [
                c if report is None else with_logprobs(c, *report)
                for c, report in zip(candidates, reports, strict=True)
            ]
        grouped: list[list[Candidate]] = []
        offset = 0
        for request in batch:
            grouped.append(candidates[offset : offset + request.sampling.n])
            offset += request.sampling.n
        return grouped

    def _to_candidate(self, ids: list[int], stop_at_delimiter: bool, max_new_tokens: int) -> Candidate:
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        eos_ids = set(eos) if isinstance(eos, list) else {eos}
        length = len(ids)
        while length and ids[length - 1] == pad and pad not in eos_ids:
            length -= 1
        ids = ids[:length]
        finish: FinishReason = "length"
        if ids and ids[-1] in eos_ids:
            finish = "eos"
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        delimiter = self.preset.step_delimiter
        if stop_at_delimiter and delimiter is not None and delimiter in text:
            text = text[: text.index(delimiter)]
            finish = "delimiter"
        elif finish == "length" and len(ids) < max_new_tokens:
            finish = "eos"
        return Candidate(text=text.strip(), num_tokens=length, finish_reason=finish)
