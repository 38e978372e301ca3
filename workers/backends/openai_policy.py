"""Policy backend over an OpenAI-compatible server (``vllm serve``): ``/v1/chat/completions``, one call per job.

The jobs of a batch are sent concurrently; the server batches them. Sampling is always explicit (``temperature``,
``top_p``, ``top_k``, ``seed``): fields left unset are filled from the model's generation config, which for some
VLMs makes every candidate identical.

Where the earlier steps go (``policy_history``):
- ``user`` (default): inside the rendered user prompt, exactly as the transformers and vLLM in-process backends
  and the AtomThink training records put them ("HISTORICAL REASONING STEPS: ...").
- ``assistant``: the user prompt without history, then a final assistant message holding the steps so far,
  continued with ``continue_final_message: true`` and ``add_generation_prompt: false``, for models that were
  trained to continue their own step list.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from atomthink.prompts import PromptPreset, resolve_prompt_preset
from atomthink.protocol import MAX_TOP_LOGPROBS, Candidate
from atomthink.settings import Settings
from workers.backends.base import GenerationRequest
from workers.backends.openai_wire import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ContentPart,
    ImageUrl,
    image_data_url,
)
from workers.backends.remote import RemoteClient, RemoteError
from workers.backends.vllm_policy import candidate_from_output, engine_seed

HistoryPlacement = Literal["user", "assistant"]


class DataUrlCache:
    """PNG data URLs of recently seen images, so the jobs of one request (which share the decoded image object)
    encode it once. Holds the images it maps, which keeps their ``id`` from being reused."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._items: OrderedDict[int, tuple[Image.Image, str]] = OrderedDict()

    def get(self, image: Image.Image) -> str:
        hit = self._items.get(id(image))
        if hit is not None and hit[0] is image:
            self._items.move_to_end(id(image))
            return hit[1]
        url = image_data_url(image.convert("RGB"))
        self._items[id(image)] = (image, url)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return url


def chat_request(
    preset: PromptPreset,
    request: GenerationRequest,
    *,
    model: str,
    history: HistoryPlacement = "user",
    image_url: str | None = None,
) -> ChatCompletionRequest:
    """The chat completion request of one job (``image_url``: the image's data URL, when already encoded)."""
    continue_steps = history == "assistant" and request.kind == "step" and bool(request.steps)
    prompt = preset.render(request.kind, request.question, () if continue_steps else request.steps)
    user: str | list[ContentPart] = prompt
    if request.image is not None:
        user = [
            ContentPart(
                type="image_url", image_url=ImageUrl(url=image_url or image_data_url(request.image.convert("RGB")))
            ),
            ContentPart(type="text", text=prompt),
        ]
    messages = [ChatMessage(role="user", content=user)]
    if continue_steps:
        joiner = preset.history_joiner
        messages.append(ChatMessage(role="assistant", content=joiner.join(request.steps) + joiner))
    sampling = request.sampling
    delimiter = preset.step_delimiter if request.kind == "step" else None
    return ChatCompletionRequest(
        model=model,
        messages=messages,
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else -1,
        max_tokens=sampling.max_new_tokens,
        stop=[delimiter] if delimiter is not None else [],
        include_stop_str_in_output=delimiter is not None,
        seed=engine_seed(sampling.seed, sampling.n),
        continue_final_message=continue_steps,
        add_generation_prompt=not continue_steps,
        return_token_ids=True,
        logprobs=sampling.logprobs is not None,
        top_logprobs=None if sampling.logprobs is None else remote_top_logprobs(sampling.logprobs),
    )


def remote_top_logprobs(k: int) -> int:
    """``top_logprobs`` to ask a vLLM server for ``k`` true top log-probabilities: vLLM lists the sampled token
    first and then the ranked ones, cutting the list at ``top_logprobs``, so one more entry is asked for and the
    ``k`` highest are kept (``choice_logprobs``). At vLLM's cap of 20 the 20th may be the sampled token instead."""
    return min(k + 1, MAX_TOP_LOGPROBS) if k > 0 else 0


def choice_logprobs(choice: ChatChoice, k: int) -> tuple[list[float], list[list[float]]]:
    """The sampled token's log-probability and the ``k`` highest at each position of a choice."""
    if choice.logprobs is None or choice.logprobs.content is None:
        raise RemoteError(f"server returned no logprobs for choice {choice.index}")
    content = choice.logprobs.content
    picked = [position.logprob for position in content]
    top = [sorted((t.logprob for t in position.top_logprobs), reverse=True)[:k] for position in content]
    return picked, top


@dataclass(frozen=True)
class _Child:
    """A chat choice seen through ``vllm_policy.CompletionLike``."""

    text: str
    token_ids: Sequence[int]
    finish_reason: str | None
    stop_reason: int | str | None


def candidates_from_response(
    response: ChatCompletionResponse, *, n: int, delimiter: str | None, logprobs: int | None = None
) -> list[Candidate]:
    """``n`` candidates in choice order; token counts from ``token_ids`` or, without them, an even share (or the
    logprobs' length when asked for); with ``logprobs``, each candidate's token log-probabilities."""
    if len(response.choices) != n:
        raise RemoteError(f"server returned {len(response.choices)} of {n} choices")
    share = response.usage.completion_tokens // max(n, 1)
    candidates = []
    for choice in sorted(response.choices, key=lambda c: c.index):
        candidate = candidate_from_output(_child(choice, share), delimiter=delimiter).model_copy(
            update={"prompt_tokens": response.usage.prompt_tokens}
        )
        if logprobs is not None:
            picked, top = choice_logprobs(choice, logprobs)
            if choice.token_ids is None:  # the logprobs count the generated tokens exactly
                candidate = candidate.model_copy(update={"num_tokens": len(picked)})
            candidate = candidate.model_copy(update={"token_logprobs": picked, "top_logprobs": top})
        candidates.append(candidate)
    return candidates


def _child(choice: ChatChoice, share: int) -> _Child:
    ids = choice.token_ids if choice.token_ids is not None else [0] * share
    return _Child(choice.message.content, ids, choice.finish_reason, choice.stop_reason)


class OpenAIPolicy:
    """``PolicyBackend`` over ``POST {policy_base_url}/chat/completions``."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        preset: PromptPreset,
        client: RemoteClient,
        history: HistoryPlacement = "user",
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.preset = preset
        self.history: HistoryPlacement = history
        self._client = client
        self._calls = 0
        self._images = DataUrlCache()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIPolicy:
        if not settings.policy_base_url:
            raise ValueError("policy_backend=openai needs ATOMTHINK_POLICY_BASE_URL")
        client = RemoteClient(
            settings.policy_base_url,
            api_key=settings.openai_api_key,
            timeout_s=settings.remote_timeout_s,
            max_concurrency=settings.remote_max_concurrency,
            name="openai-policy",
            retry_s=settings.remote_retry_budget_s,
        )
        return cls(
            settings.policy_base_url,
            model=settings.policy_served_name,
            preset=resolve_prompt_preset(settings.prompt_preset, settings.policy_model),
            client=client,
            history=settings.policy_history,
        )

    @property
    def model_calls(self) -> int:
        return self._calls

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        self._calls += 1
        return self._client.run(self._generate_all(requests))

    async def agenerate(self, request: GenerationRequest) -> list[Candidate]:
        """One request's candidates, awaited from the worker's loop (continuous feeding)."""
        self._calls += 1
        return await self._client.arun(self._generate_one(request))

    async def _generate_all(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    async def _generate_one(self, request: GenerationRequest) -> list[Candidate]:
        url = self._images.get(request.image) if request.image is not None else None
        payload = chat_request(self.preset, request, model=self.model, history=self.history, image_url=url)
        response = await self._client.post(self.url, payload, ChatCompletionResponse)
        delimiter = self.preset.step_delimiter if request.kind == "step" else None
        return candidates_from_response(
            response, n=request.sampling.n, delimiter=delimiter, logprobs=request.sampling.logprobs
        )

    def close(self) -> None:
        self._client.close()
