"""Context windows: count a prompt's tokens exactly as the transformers backends build it, and refuse what cannot fit.

A policy job fits when its prompt plus ``sampling.max_new_tokens`` fits the window; a job that names a smaller
``sampling.min_new_tokens`` (whole answers) is cut to the room left, down to that floor. A PRM job fits when every
path's encoding fits. The workers check each job before the model call (history grows at every step) and answer
``context_length_exceeded`` (not recoverable); the gateway checks the first prompt with the same counters, so an
over-long question gets its 400 in milliseconds. Counting needs only the tokenizer (and the processor, for the
image tokens), never the weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from PIL import Image
from transformers import AutoConfig, AutoProcessor, AutoTokenizer

from atomthink.errors import ContextTooLong
from atomthink.prm_format import PrmPreset, encode_path, get_prm_preset
from atomthink.prompts import PromptPreset, chat_messages, read_checkpoint_presets, resolve_prompt_preset
from atomthink.protocol import PromptKind, SamplingParams
from atomthink.settings import Settings
from workers.backends.base import GenerationRequest, ScoreRequest

log = logging.getLogger(__name__)


def context_window(config: Any) -> int | None:
    """Positions the model's text decoder can attend over (``max_position_embeddings``), if it says."""
    text_config = getattr(config, "text_config", None) or config
    window = getattr(text_config, "max_position_embeddings", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def render_prompt_text(
    template_owner: Any, preset: PromptPreset, request: GenerationRequest, *, multimodal: bool
) -> str:
    """The exact prompt string every policy backend feeds its tokenizer, processor or engine: the preset's text in
    the checkpoint's chat template (``template_owner``: the processor of a multimodal checkpoint, whose template
    takes the image part first, or a text tokenizer, which takes plain string content), or without a template the
    image placeholder line first. The transformers policy, the vLLM policy and the context check all use it."""
    with_image = request.image is not None and multimodal
    prompt = preset.render(request.kind, request.question, request.steps)
    if getattr(template_owner, "chat_template", None):
        messages: list[dict[str, object]] = (
            chat_messages(prompt, has_image=with_image) if multimodal else [{"role": "user", "content": prompt}]
        )
        return str(template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    if with_image:
        return f"{template_owner.image_token}\n{prompt}"
    return prompt


class PolicyWindow:
    """Token counts of policy prompts, and the fit rule, for one checkpoint."""

    def __init__(self, preset: PromptPreset, tokenizer: Any, processor: Any, window: int) -> None:
        self.preset = preset
        self.tokenizer = tokenizer
        self.processor = processor
        self.window = window
        self._image_tokens: int | None = None

    @classmethod
    def from_checkpoint(cls, model_path: str, preset: str = "auto") -> PolicyWindow | None:
        config = AutoConfig.from_pretrained(model_path)
        window = context_window(config)
        if window is None:
            return None
        processor = AutoProcessor.from_pretrained(model_path) if hasattr(config, "vision_config") else None
        tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(model_path)
        counter = cls(resolve_prompt_preset(preset, model_path), tokenizer, processor, window)
        if counter.multimodal:
            counter.image_tokens()  # measured while loading (in a thread), not by the first request on a loop
        return counter

    @property
    def multimodal(self) -> bool:
        return self.processor is not None

    def image_tokens(self) -> int:
        """Positions an image adds beyond its one placeholder token (the processor expands it), measured once."""
        if self._image_tokens is None:
            marker = self.processor.image_token
            expanded = self.processor(images=[Image.new("RGB", (32, 32))], text=[marker])
            plain = self.tokenizer(marker, add_special_tokens=False)["input_ids"]
            self._image_tokens = len(expanded["input_ids"][0]) - len(plain)
        return self._image_tokens

    def prompt_tokens(self, request: GenerationRequest) -> int:
        with_image = request.image is not None and self.multimodal
        owner = self.processor if self.multimodal else self.tokenizer
        text = render_prompt_text(owner, self.preset, request, multimodal=self.multimodal)
        count = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return count + (self.image_tokens() if with_image else 0)

    def fit(self, request: GenerationRequest) -> GenerationRequest:
        """``request``, its ``max_new_tokens`` cut to the room left when it allows; ``ContextTooLong`` otherwise."""
        used = self.prompt_tokens(request)
        room = self.window - used
        sampling = request.sampling
        needed = sampling.max_new_tokens if sampling.min_new_tokens is None else sampling.min_new_tokens
        if room < needed:
            raise ContextTooLong(
                f"the prompt takes {used} tokens and needs {needed} more for its {request.kind} "
                f"({used + needed} in all), over the policy's context window of {self.window} positions",
                field="question",
            )
        if room >= sampling.max_new_tokens:
            return request
        return dataclasses.replace(request, sampling=sampling.model_copy(update={"max_new_tokens": room}))


class PrmWindow:
    """Token counts of scored paths for one PRM checkpoint."""

    def __init__(self, preset: PrmPreset, tokenizer: Any, window: int) -> None:
        self.preset = preset
        self.tokenizer = tokenizer
        self.window = window

    @classmethod
    def from_checkpoint(cls, model_path: str, preset: str = "auto") -> PrmWindow | None:
        window = context_window(AutoConfig.from_pretrained(model_path))
        if window is None:
            return None
        if preset == "auto":
            preset = read_checkpoint_presets(model_path).get("prm_preset", "math-psa")
        return cls(get_prm_preset(preset), AutoTokenizer.from_pretrained(model_path), window)

    def path_tokens(self, question: str, steps: Sequence[str]) -> int:
        return len(encode_path(self.tokenizer, self.preset, question, steps)[0])

    def fit(self, request: ScoreRequest) -> None:
        """``ContextTooLong`` when a path's encoding is longer than the window."""
        for path in request.paths:
            used = self.path_tokens(request.question, path)
            if used > self.window:
                raise ContextTooLong(
                    f"a path of {len(path)} steps takes {used} tokens, over the PRM's context window of "
                    f"{self.window} positions",
                    field="question",
                )


class FirstPromptCheck:
    """The gateway's check of a request's first prompt against the policy's (and, when it scores, the PRM's)
    window; it satisfies ``PromptLimits`` in ``service.orchestrator.solver``."""

    def __init__(self, policy: PolicyWindow | None, prm: PrmWindow | None) -> None:
        self.policy = policy
        self.prm = prm

    @classmethod
    def from_backends(cls, policy: object, prm: object) -> FirstPromptCheck:
        """The counters of loaded backends (the embedded gateway): those that know their window."""
        policy_window, prm_window = getattr(policy, "window", None), getattr(prm, "window", None)
        return cls(
            policy_window if isinstance(policy_window, PolicyWindow) else None,
            prm_window if isinstance(prm_window, PrmWindow) else None,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FirstPromptCheck:
        """Counters from the checkpoints named by settings (tokenizers only, for a gateway without models). A
        remote backend or a checkpoint this host cannot read gives no gateway check for its role; its workers still
        check every job."""
        policy: PolicyWindow | None = None
        prm: PrmWindow | None = None
        if settings.policy_backend == "transformers":
            try:
                policy = PolicyWindow.from_checkpoint(settings.policy_model, settings.prompt_preset)
            except (OSError, ValueError) as exc:
                log.warning("no context check of the policy at the gateway: %s", exc)
        if settings.prm_backend == "transformers":
            try:
                prm = PrmWindow.from_checkpoint(settings.prm_model, settings.prm_preset)
            except (OSError, ValueError) as exc:
                log.warning("no context check of the PRM at the gateway: %s", exc)
        check = cls(policy, prm)
        # one check now, while loading in a thread: the chat template's compilation and the tokenizers' first calls
        # (tens of milliseconds) are not paid by the first request, on the gateway's event loop
        with contextlib.suppress(ContextTooLong):
            check.check("step", "1 + 1 = ?", policy is not None and policy.multimodal, SamplingParams(), scored=True)
        return check

    def check(self, kind: PromptKind, question: str, has_image: bool, sampling: SamplingParams, scored: bool) -> None:
        if self.policy is not None:
            image = Image.new("RGB", (1, 1)) if has_image else None
            self.policy.fit(GenerationRequest(kind, question, [], image, sampling))
        if scored and self.prm is not None:
            # the first scored path holds the question and one step of up to max_new_tokens tokens
            used = self.prm.path_tokens(question, [""]) + sampling.max_new_tokens
            if used > self.prm.window:
                raise ContextTooLong(
                    f"the question takes {used - sampling.max_new_tokens} tokens and a step up to "
                    f"{sampling.max_new_tokens} more ({used} in all), over the PRM's context window of "
                    f"{self.prm.window} positions",
                    field="question",
                )
