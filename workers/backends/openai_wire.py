"""The subset of the OpenAI / vLLM HTTP API the remote backends speak, as pydantic models.

Shared by the clients (``openai_policy``, ``openai_prm``) and the project's own adapter server
(``harness.openai_server``), so both ends agree on one definition. Requests forbid nothing extra on the server side
(vLLM accepts many more fields); responses ignore what they do not use.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageUrl(_Wire):
    url: str


class ContentPart(_Wire):
    """A text part or an image part (``image_url`` holding a ``data:`` URL)."""

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class ChatMessage(_Wire):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatCompletionRequest(_Wire):
    """``POST /v1/chat/completions`` with vLLM's extra sampling fields."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(1, ge=1, le=64)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = -1
    """vLLM extension; ``-1`` (or 0) turns top-k off."""
    max_tokens: int | None = Field(None, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    continue_final_message: bool = False
    add_generation_prompt: bool = True
    include_stop_str_in_output: bool = False
    return_token_ids: bool = False
    """vLLM extension: each choice carries its generated ``token_ids``."""
    logprobs: bool = False
    """Each choice carries the sampled tokens' log-probabilities (``choices[i].logprobs.content``)."""
    top_logprobs: int | None = Field(None, ge=0, le=20)
    """With ``logprobs``: also this many most likely tokens' log-probabilities per position."""


class AssistantMessage(_Wire):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(_Wire):
    token: str = ""
    logprob: float


class TokenLogprob(_Wire):
    """One generated position: the sampled token's log-probability and the most likely tokens' (``top_logprobs``)."""

    token: str = ""
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Wire):
    content: list[TokenLogprob] | None = None


class ChatChoice(_Wire):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | str | None
    stop_reason: int | str | None = None
    """vLLM extension: the stop string (or token id) that ended the choice; ``None`` for EOS."""
    token_ids: list[int] | None = None


class Usage(_Wire):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletionResponse(_Wire):
    id: str = ""
    object: str = "chat.completion"
    model: str = ""
    choices: list[ChatChoice]
    usage: Usage = Field(default_factory=Usage)


class CompletionRequest(_Wire):
    """``POST /v1/completions``; the PRM uses it for one-token reads of label logprobs on token-id prompts."""

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    logprobs: int | None = Field(None, ge=0)
    logprob_token_ids: list[int] | None = None
    """vLLM extension: report these tokens' full-vocabulary logprobs whether or not they are in the top ones."""
    return_tokens_as_token_ids: bool = False
    """vLLM extension: logprob keys are ``token_id:<id>`` instead of decoded text."""


class CompletionLogprobs(_Wire):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(_Wire):
    index: int
    text: str = ""
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(_Wire):
    id: str = ""
    object: str = "text_completion"
    model: str = ""
    choices: list[CompletionChoice]
    usage: Usage = Field(default_factory=Usage)


class PoolingRequest(_Wire):
    """``POST /pooling`` in its chat form (Qwen2.5-Math-PRM: system, user question, assistant steps)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    task: str | None = "token_classify"


class PoolingItem(_Wire):
    index: int = 0
    object: str = "pooling"
    data: Any
    """For ``token_classify`` on a step-tag PRM: one ``[p_bad, p_good]`` row per separator."""


class PoolingResponse(_Wire):
    id: str = ""
    object: str = "list"
    model: str = ""
    data: list[PoolingItem]
    usage: Usage = Field(default_factory=Usage)


class ModelCard(_Wire):
    id: str
    object: str = "model"
    owned_by: str = "atomthink"


class ModelList(_Wire):
    object: str = "list"
    data: list[ModelCard]


def image_data_url(image: Image.Image) -> str:
    """A PNG ``data:`` URL of an image (lossless, so the server sees the pixels the transformers backend sees)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def token_id_key(token_id: int) -> str:
    """The key vLLM gives a logprob entry when asked ``return_tokens_as_token_ids``."""
    return f"token_id:{token_id}"
