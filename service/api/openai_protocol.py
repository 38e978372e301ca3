"""Wire types of the OpenAI-compatible facade (``/v1/chat/completions``, ``/v1/models``) and their mapping to a solve.

The facade is a translation: a chat request becomes ``SolveParams`` plus an image, and a ``SolveResponse`` becomes a
chat completion with the answer in ``content``, the atomic steps in ``reasoning`` (and ``reasoning_content``), and
the whole solve response in the extra field ``atomthink``.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atomthink.errors import InvalidRequest
from service.api.errors import validation_to_error
from service.orchestrator.strategies import registry
from service.schemas import Mode, SolveParams, SolveResponse, strategy_fields_schema

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]

EFFORT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {"mode": "direct"},
    "minimal": {"mode": "cot"},
    "low": {"mode": "quick"},
    "medium": {"mode": "slow", "strategy": "beam", "candidates": 3, "beam_width": 2},
    "high": {"mode": "slow", "strategy": "beam", "candidates": 6, "beam_width": 3},
    "xhigh": {"mode": "slow", "strategy": "beam", "candidates": 8, "beam_width": 4},
}
"""``reasoning_effort`` -> solve fields (the README's table). Absent, the effort is ``medium``."""
DEFAULT_EFFORT: ReasoningEffort = "medium"


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    url: str = Field(description="A data URL (data:image/png;base64,...), or an http(s) URL of an allowed host.")
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class AtomThinkOptions(BaseModel):
    """Search knobs (the OpenAI clients' ``extra_body={"atomthink": {...}}``); they override the effort preset.

    Besides the fields below it takes every registered strategy's fields (``/solve``'s), validated with the solve."""

    model_config = ConfigDict(extra="allow", json_schema_extra=strategy_fields_schema)

    mode: Mode | None = None
    strategy: str | None = None
    max_steps: int | None = None
    deadline_ms: int | None = None
    choices: list[str] | None = None
    return_tree: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat completion request that apply; other fields are accepted and ignored."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    reasoning_effort: ReasoningEffort | None = Field(
        None,
        description="none: direct, minimal: cot, low: quick, medium (default): slow beam 3x2, high: 6x3, xhigh: 8x4.",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    max_completion_tokens: int | None = Field(
        None, description="Most tokens the search may generate over all candidates (the solve's max_thinking_tokens)."
    )
    max_tokens: int | None = Field(None, description="Older name of max_completion_tokens.")
    atomthink: AtomThinkOptions | None = None

    def question_and_image_urls(self) -> tuple[str, list[tuple[str, str]]]:
        """Text of the last user message, and its image URLs with their field paths (earlier turns are ignored)."""
        index = next((i for i in range(len(self.messages) - 1, -1, -1) if self.messages[i].role == "user"), None)
        if index is None:
            raise InvalidRequest("messages must contain a user message", field="messages")
        content = self.messages[index].content
        parts: list[TextPart | ImagePart] = (
            [TextPart(type="text", text=content or "")]
            if (isinstance(content, str) or content is None)
            else list(content)
        )
        question = "\n".join(part.text for part in parts if isinstance(part, TextPart)).strip()
        if not question:
            raise InvalidRequest("the last user message has no text (the question)", field=f"messages.{index}.content")
        urls = [
            (part.image_url.url, f"messages.{index}.content.{j}.image_url.url")
            for j, part in enumerate(parts)
            if isinstance(part, ImagePart)
        ]
        return question, urls

    def solve_params(self, question: str) -> SolveParams:
        """The effort preset, overridden by the ``atomthink`` knobs and sampling fields, validated as a solve."""
        options = self.atomthink.model_dump(exclude_none=True) if self.atomthink else {}
        if "mode" in options and self.reasoning_effort is not None:
            raise InvalidRequest("give reasoning_effort or atomthink.mode, not both", field="atomthink.mode")
        for name in options:
            if name not in AtomThinkOptions.model_fields and name not in registry.param_fields():
                raise InvalidRequest("extra inputs are not permitted", field=f"atomthink.{name}")
        preset = {} if "mode" in options else dict(EFFORT_PRESETS[self.reasoning_effort or DEFAULT_EFFORT])
        if "strategy" in options:  # the effort's beam knobs give way to the chosen strategy's fields
            with contextlib.suppress(KeyError):
                fields = registry.get(options["strategy"]).params.model_fields
                preset = {k: v for k, v in preset.items() if k in ("mode", "strategy") or k in fields}
        budget = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        sampling = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "max_thinking_tokens": budget,
        }
        fields = {**preset, **options, **{k: v for k, v in sampling.items() if v is not None}, "question": question}
        try:
            return SolveParams.model_validate(fields)
        except ValidationError as exc:
            error = validation_to_error(exc)
            known = error.field in options
            field = f"atomthink.{error.field}" if known else error.field
            if error.field == "max_thinking_tokens":
                field = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
            raise InvalidRequest(error.message, field=field) from None


class ReasoningDetails(BaseModel):
    reasoning_tokens: int


class Usage(BaseModel):
    prompt_tokens: int = Field(
        description="Prompt tokens the policy read over the whole search: each policy call's prompt once."
    )
    completion_tokens: int = Field(description="Every token the search sampled, rejected and pruned steps included.")
    total_tokens: int
    completion_tokens_details: ReasoningDetails


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(description="The final answer (an option letter or a value); empty when none was reached.")
    reasoning: str = Field(description="The atomic steps of the chosen path, one per line.")
    reasoning_content: str = Field(description="The same as reasoning, for older clients.")


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    atomthink: SolveResponse = Field(description="The solve response: step scores, votes, stats, timings, tree.")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    atomthink: SolveResponse | None = Field(None, description="On the last chunk: the solve response.")


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "atomthink"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


def finish_reason(response: SolveResponse) -> Literal["stop", "length"]:
    """``stop`` when a final step was reached in time, ``length`` when the budget or deadline ran out first."""
    return "stop" if response.final and not response.truncated else "length"


def usage(response: SolveResponse) -> Usage:
    tokens = response.stats.generated_tokens
    prompt = response.stats.prompt_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=tokens,
        total_tokens=prompt + tokens,
        completion_tokens_details=ReasoningDetails(reasoning_tokens=tokens),
    )


def completion(response: SolveResponse, model: str, created: int) -> ChatCompletion:
    reasoning = "\n".join(step.text for step in response.steps)
    message = AssistantMessage(content=response.answer or "", reasoning=reasoning, reasoning_content=reasoning)
    return ChatCompletion(
        id=f"chatcmpl-{response.id}",
        created=created,
        model=model,
        choices=[Choice(message=message, finish_reason=finish_reason(response))],
        usage=usage(response),
        atomthink=response,
    )
