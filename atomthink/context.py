"""Context windows: count a prompt's tokens exactly as the policy backends build it, and refuse what cannot fit.

Counting needs a checkpoint's files, never a model library: its ``tokenizer.json`` (the Rust ``tokenizers``
library), its chat template (rendered with jinja2 in the environment transformers' ``apply_chat_template`` uses), its
``config.json`` (the window) and, for a multimodal checkpoint, its processor config (how many positions an image
takes). The gateway (no torch, no transformers) and the workers count with the same classes.

A policy job fits when its prompt plus ``sampling.max_new_tokens`` fits the window; a job that names a smaller
``sampling.min_new_tokens`` (whole answers) is cut to the room left, down to that floor. A PRM job fits when every
path's encoding fits. The workers check each job before the model call (history grows at every step) and answer
``context_length_exceeded`` (not recoverable); the gateway checks the first prompt with the same counters, so an
over-long question gets its 400 in milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from atomthink.errors import ContextTooLong
from atomthink.prm_format import PrmPreset, encode_path, get_prm_preset
from atomthink.prompts import PromptKind, PromptPreset, chat_messages, read_checkpoint_presets, resolve_prompt_preset
from atomthink.protocol import SamplingParams
from atomthink.settings import Settings

log = logging.getLogger(__name__)


def checkpoint_file(model: str, name: str) -> Path | None:
    """``name`` in the checkpoint ``model`` (a directory, or a Hub id resolved through the local Hub cache or a
    download), or None when the checkpoint has no such file."""
    directory = Path(model)
    if directory.is_dir():
        path = directory / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(model, name))
    except LocalEntryNotFoundError:
        raise  # offline and not cached: an OSError, not an absent file
    except EntryNotFoundError:
        return None


def _read_json(model: str, name: str) -> dict[str, Any]:
    path = checkpoint_file(model, name)
    return json.loads(path.read_text()) if path is not None else {}


def _token_text(value: object) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or an added-token object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _template_environment() -> ImmutableSandboxedEnvironment:
    """The jinja2 environment transformers renders chat templates in (``chat_template_utils``): sandboxed, blocks
    trimmed, loop controls, ``tojson`` without HTML escaping, ``raise_exception`` and ``strftime_now``."""

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: object,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def read_chat_template(model: str) -> str | None:
    """The checkpoint's chat template, looked up where transformers saves it: ``chat_template.jinja``, then
    ``chat_template.json``, then the processor's and the tokenizer's configs."""
    path = checkpoint_file(model, "chat_template.jinja")
    if path is not None:
        return path.read_text()
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        template = _read_json(model, name).get("chat_template")
        if isinstance(template, str):
            return template
    return None


class ChatTokenizer:
    """A checkpoint's tokenizer and chat template without transformers. It answers the calls the prompt and PRM
    formats make of a transformers tokenizer (``tokenizer(text)["input_ids"]``, ``bos_token_id``, ``chat_template``,
    ``apply_chat_template(..., tokenize=False)``, ``image_token``), with the same results."""

    def __init__(self, tokenizer: Tokenizer, chat_template: str | None, special_tokens: Mapping[str, str]) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens)
        """Named special tokens (``bos_token``, ``eos_token``, ``image_token``...): template variables, as in
        transformers' ``special_tokens_map``."""
        self._template = _template_environment().from_string(chat_template) if chat_template else None

    @classmethod
    def from_checkpoint(cls, model: str) -> ChatTokenizer:
        path = checkpoint_file(model, "tokenizer.json")
        if path is None:
            raise ValueError(f"{model} has no tokenizer.json (a tokenizers-library tokenizer)")
        config = _read_json(model, "tokenizer_config.json")
        named = {key: _token_text(value) for key, value in config.items() if key.endswith("_token")}
        return cls(Tokenizer.from_file(str(path)), read_chat_template(model), {k: v for k, v in named.items() if v})

    @property
    def image_token(self) -> str | None:
        return self.special_tokens.get("image_token")

    @property
    def bos_token_id(self) -> int | None:
        bos = self.special_tokens.get("bos_token")
        return self.tokenizer.token_to_id(bos) if bos is not None else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = False, tokenize: bool = False
    ) -> str:
        """The chat as transformers' ``apply_chat_template(..., tokenize=False)`` renders it."""
        if self._template is None:
            raise ValueError("this checkpoint has no chat template")
        if tokenize:
            raise ValueError("ChatTokenizer renders text only: encode the text it returns")
        chat = [{key: value for key, value in message.items() if value is not None} for message in messages]
        variables = {**self.special_tokens, "tools": None, "documents": None}
        return self._template.render(messages=chat, add_generation_prompt=add_generation_prompt, **variables)


def _smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's image resize rule: sides divisible by ``factor``, the area within the pixel bounds."""
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


PROBE_IMAGE_SIDE = 32
"""Side of the square image the image positions are counted for (a first prompt's image is not decoded yet)."""


def image_positions(model: str) -> int:
    """Positions an image adds beyond its one placeholder token, as the checkpoint's processor expands the
    placeholder for a ``PROBE_IMAGE_SIDE`` square image; from the processor config (LLaVA-style, Qwen2-VL,
    Qwen2.5-VL and Mllama processors), ``ValueError`` for another processor."""
    config = _read_json(model, "processor_config.json")
    image = config.get("image_processor") or _read_json(model, "preprocessor_config.json")
    processor = config.get("processor_class") or image.get("processor_class")
    side = PROBE_IMAGE_SIDE
    if processor == "LlavaProcessor":
        if image.get("do_center_crop"):
            height, width = image["crop_size"]["height"], image["crop_size"]["width"]
        elif "height" in image["size"]:
            height, width = image["size"]["height"], image["size"]["width"]
        else:
            height = width = image["size"]["shortest_edge"]
        patch = int(config["patch_size"])
        count = (height // patch) * (width // patch) + int(config.get("num_additional_image_tokens", 0))
        return count - (1 if config.get("vision_feature_select_strategy") == "default" else 0) - 1
    qwen_images = str(image.get("image_processor_type", "")).startswith("Qwen2VLImageProcessor")
    if processor in ("Qwen2VLProcessor", "Qwen2_5_VLProcessor") or qwen_images:
        patch, merge = int(image["patch_size"]), int(image["merge_size"])
        size = image.get("size") or {}
        low = int(size.get("shortest_edge", image.get("min_pixels", 56 * 56)))
        high = int(size.get("longest_edge", image.get("max_pixels", 28 * 28 * 1280)))
        height, width = _smart_resize(side, side, patch * merge, low, high)
        return (height // patch) * (width // patch) // merge**2 - 1
    if processor == "MllamaProcessor":
        # cross-attention: the placeholder stays one token, but the processor writes a BOS before a prompt that has
        # none (a lone placeholder), so its measured expansion was one position; kept, as the count errs long
        return 1
    raise ValueError(f"{model}: no image-token rule for the processor {processor!r} (LLaVA, Qwen2-VL, Mllama have)")


def context_window(config: Mapping[str, Any]) -> int | None:
    """Positions the model's text decoder can attend over (``max_position_embeddings``), if its config says."""
    text_config = config.get("text_config") or config
    window = text_config.get("max_position_embeddings")
    return int(window) if isinstance(window, int) and window > 0 else None


class PolicyPrompt(Protocol):
    """What a policy prompt is made of (``workers.backends.base.GenerationRequest`` is one)."""

    @property
    def kind(self) -> PromptKind: ...
    @property
    def question(self) -> str: ...
    @property
    def steps(self) -> Sequence[str]: ...
    @property
    def image(self) -> object | None: ...
    @property
    def sampling(self) -> SamplingParams: ...


Prompt = TypeVar("Prompt", bound=PolicyPrompt)


def render_prompt_text(template_owner: Any, preset: PromptPreset, request: PolicyPrompt, *, multimodal: bool) -> str:
    """The exact prompt string every policy backend feeds its tokenizer, processor or engine: the preset's text in
    the checkpoint's chat template (``template_owner``: the processor of a multimodal checkpoint, whose template
    takes the image part first, a text tokenizer, which takes plain string content, or a :class:`ChatTokenizer`),
    or without a template the image placeholder line first. The policy backends and the context check use it."""
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

    def __init__(self, preset: PromptPreset, tokenizer: ChatTokenizer, window: int, image_tokens: int | None) -> None:
        self.preset = preset
        self.tokenizer = tokenizer
        self.window = window
        self.image_tokens = image_tokens
        """Positions an image adds beyond its placeholder; None for a text-only checkpoint."""

    @classmethod
    def from_checkpoint(cls, model_path: str, preset: str = "auto") -> PolicyWindow | None:
        config = _read_json(model_path, "config.json")
        window = context_window(config)
        if window is None:
            return None
        images = image_positions(model_path) if "vision_config" in config else None
        tokenizer = ChatTokenizer.from_checkpoint(model_path)
        return cls(resolve_prompt_preset(preset, model_path), tokenizer, window, images)

    @property
    def multimodal(self) -> bool:
        return self.image_tokens is not None

    def prompt_tokens(self, request: PolicyPrompt) -> int:
        text = render_prompt_text(self.tokenizer, self.preset, request, multimodal=self.multimodal)
        count = len(self.tokenizer.encode(text, add_special_tokens=False))
        return count + (self.image_tokens or 0) * (request.image is not None)

    def fit(self, request: Prompt) -> Prompt:
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
        cut = sampling.model_copy(update={"max_new_tokens": room})
        return dataclasses.replace(request, sampling=cut)  # type: ignore[type-var]


class ScoredPaths(Protocol):
    """Paths of one question (``workers.backends.base.ScoreRequest`` is one)."""

    @property
    def question(self) -> str: ...
    @property
    def paths(self) -> Sequence[Sequence[str]]: ...


class PrmWindow:
    """Token counts of scored paths for one PRM checkpoint."""

    def __init__(self, preset: PrmPreset, tokenizer: ChatTokenizer, window: int) -> None:
        self.preset = preset
        self.tokenizer = tokenizer
        self.window = window

    @classmethod
    def from_checkpoint(cls, model_path: str, preset: str = "auto") -> PrmWindow | None:
        window = context_window(_read_json(model_path, "config.json"))
        if window is None:
            return None
        if preset == "auto":
            preset = read_checkpoint_presets(model_path).get("prm_preset", "math-psa")
        return cls(get_prm_preset(preset), ChatTokenizer.from_checkpoint(model_path), window)

    def path_tokens(self, question: str, steps: Sequence[str]) -> int:
        return len(encode_path(self.tokenizer, self.preset, question, steps)[0])

    def fit(self, request: ScoredPaths) -> None:
        """``ContextTooLong`` when a path's encoding is longer than the window."""
        for path in request.paths:
            used = self.path_tokens(request.question, path)
            if used > self.window:
                raise ContextTooLong(
                    f"a path of {len(path)} steps takes {used} tokens, over the PRM's context window of "
                    f"{self.window} positions",
                    field="question",
                )


@dataclasses.dataclass(frozen=True)
class _FirstPrompt:
    kind: PromptKind
    question: str
    image: object | None
    sampling: SamplingParams
    steps: Sequence[str] = ()


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
        """Counters from the checkpoints named by settings (their tokenizer files only, for a gateway without model
        libraries). A remote backend or a checkpoint this host cannot read gives no gateway check for its role; its
        workers still check every job."""
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
        # are not paid by the first request, on the gateway's event loop
        with contextlib.suppress(ContextTooLong):
            check.check("step", "1 + 1 = ?", policy is not None and policy.multimodal, SamplingParams(), scored=True)
        return check

    def check(self, kind: PromptKind, question: str, has_image: bool, sampling: SamplingParams, scored: bool) -> None:
        if self.policy is not None:
            self.policy.fit(_FirstPrompt(kind, question, True if has_image else None, sampling))
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
