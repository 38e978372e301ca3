"""PRM backends over an OpenAI-compatible server (vLLM); the requests of a batch are scored concurrently.

- ``OpenAIPoolingPrm``: a token-classification PRM (Qwen2.5-Math-PRM) behind ``POST /pooling``, one call per path:
  the chat (system prompt, question, steps each followed by ``<extra_0>``) comes back as one ``[p_bad, p_good]`` row
  per separator; the step score is ``p_good``.
- ``OpenAICompletionsPrm``: a causal-LM PRM (Math-psa, Math-Shepherd) served as a generative model, one call per
  request. The path is tokenized here, as one string, exactly as the transformers backend does (``encode_path``);
  each step's prefix up to its tag is a token-id prompt of a one-token completion whose label logprobs give
  ``p(+) / (p(+) + p(-))``. Steps whose scores the job already carries (``known``) get no prompt.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from atomthink.prm_format import PrmPreset, chat_path_messages, encode_path, get_prm_preset, label_token_ids
from atomthink.prompts import read_checkpoint_presets
from atomthink.settings import Settings
from workers.backends.base import ScoreRequest
from workers.backends.openai_wire import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    PoolingRequest,
    PoolingResponse,
    token_id_key,
)
from workers.backends.remote import RemoteClient, RemoteError, server_root


def resolve_prm_preset(name: str, model: str) -> PrmPreset:
    """``auto`` reads the checkpoint's ``atomthink.json`` (when ``model`` is a local directory), else math-psa."""
    if name == "auto":
        name = read_checkpoint_presets(model).get("prm_preset", "math-psa")
    return get_prm_preset(name)


def pooling_request(preset: PrmPreset, question: str, steps: Sequence[str], *, model: str) -> PoolingRequest:
    """The ``/pooling`` request of one path, laid out as ``prm_format`` lays out token-classification paths."""
    if preset.kind != "token_classification":
        raise ValueError(f"PRM preset {preset.name} is a {preset.kind} PRM; /pooling needs token classification")
    return PoolingRequest(
        model=model,
        messages=[ChatMessage(**m) for m in chat_path_messages(preset, question, steps)],
        task="token_classify",
    )


def scores_from_pooling(response: PoolingResponse, num_steps: int) -> list[float]:
    """``p_good`` of each separator's ``[p_bad, p_good]`` row."""
    if not response.data:
        raise RemoteError("pooling response has no data")
    rows = response.data[0].data
    well_formed = isinstance(rows, list) and all(isinstance(r, list) and len(r) == 2 for r in rows)
    if not well_formed or len(rows) != num_steps:
        raise RemoteError(f"expected {num_steps} [p_bad, p_good] rows, got {str(rows)[:200]}")
    return [round(float(row[1]), 6) for row in rows]


def completion_request(prompts: list[list[int]], labels: tuple[int, int], *, model: str) -> CompletionRequest:
    """One-token reads at every step tag of a path, with the ``+`` and ``-`` label logprobs asked for by id."""
    return CompletionRequest(
        model=model,
        prompt=prompts,
        max_tokens=1,
        temperature=0.0,
        logprobs=len(labels),
        logprob_token_ids=list(labels),
        return_tokens_as_token_ids=True,
    )


def scores_from_completions(response: CompletionResponse, labels: tuple[int, int], num_steps: int) -> list[float]:
    """``p(+) / (p(+) + p(-))`` of each prompt, in prompt order."""
    if len(response.choices) != num_steps:
        raise RemoteError(f"expected {num_steps} completion choices, got {len(response.choices)}")
    plus_key, minus_key = token_id_key(labels[0]), token_id_key(labels[1])
    scores = []
    for choice in sorted(response.choices, key=lambda c: c.index):
        top = choice.logprobs.top_logprobs[0] if choice.logprobs and choice.logprobs.top_logprobs else None
        if not top or plus_key not in top or minus_key not in top:
            raise RemoteError(f"completion choice {choice.index} lacks the label logprobs {plus_key}, {minus_key}")
        scores.append(round(1.0 / (1.0 + math.exp(top[minus_key] - top[plus_key])), 6))
    return scores


class _RemotePrm:
    """Shared client plumbing: each request's scores from concurrent HTTP calls (how many: the subclass's)."""

    def __init__(self, client: RemoteClient) -> None:
        self._client = client
        self._calls = 0

    @property
    def model_calls(self) -> int:
        return self._calls

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[list[float]]]:
        self._calls += 1
        return self._client.run(self._score_all(requests))

    async def ascore(self, request: ScoreRequest) -> list[list[float]]:
        """One request's scores, awaited from the worker's loop (continuous feeding); runs on the client's loop."""
        self._calls += 1
        return await self._client.arun(self._score_request(request))

    async def _score_all(self, requests: Sequence[ScoreRequest]) -> list[list[list[float]]]:
        return list(await asyncio.gather(*(self._score_request(r) for r in requests)))

    async def _score_request(self, request: ScoreRequest) -> list[list[float]]:
        raise NotImplementedError

    def close(self) -> None:
        self._client.close()


def _client(settings: Settings, name: str) -> RemoteClient:
    if not settings.prm_base_url:
        raise ValueError(f"prm_backend={settings.prm_backend} needs ATOMTHINK_PRM_BASE_URL")
    return RemoteClient(
        settings.prm_base_url,
        api_key=settings.openai_api_key,
        timeout_s=settings.remote_timeout_s,
        max_concurrency=settings.remote_max_concurrency,
        name=name,
        retry_s=settings.remote_retry_budget_s,
    )


class OpenAIPoolingPrm(_RemotePrm):
    """``StepScorer`` over vLLM's ``POST /pooling`` (``--runner pooling``, task ``token_classify``)."""

    def __init__(self, base_url: str, *, model: str, preset: PrmPreset, client: RemoteClient) -> None:
        super().__init__(client)
        if preset.kind != "token_classification":
            raise ValueError(f"openai-pooling needs a token-classification PRM preset, not {preset.name}")
        self.url = server_root(base_url) + "/pooling"
        self.model = model
        self.preset = preset

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIPoolingPrm:
        name = settings.prm_preset
        if name == "auto":
            name = read_checkpoint_presets(settings.prm_model).get("prm_preset", "qwen-prm")
        preset = get_prm_preset(name)
        client = _client(settings, "openai-pooling-prm")
        return cls(str(settings.prm_base_url), model=settings.prm_served_name, preset=preset, client=client)

    async def _score_request(self, request: ScoreRequest) -> list[list[float]]:
        """One ``/pooling`` call per path (it takes one conversation); the whole path is scored each time."""
        return list(await asyncio.gather(*(self._score_path(request.question, path) for path in request.paths)))

    async def _score_path(self, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        payload = pooling_request(self.preset, question, steps, model=self.model)
        response = await self._client.post(self.url, payload, PoolingResponse)
        return scores_from_pooling(response, len(steps))


class OpenAICompletionsPrm(_RemotePrm):
    """``StepScorer`` over ``POST {prm_base_url}/completions`` with a locally loaded tokenizer."""

    def __init__(self, base_url: str, *, model: str, preset: PrmPreset, tokenizer: Any, client: RemoteClient) -> None:
        super().__init__(client)
        if preset.kind != "causal_lm":
            raise ValueError(f"openai-completions needs a causal-LM PRM preset, not {preset.name}")
        self.url = base_url.rstrip("/") + "/completions"
        self.model = model
        self.preset = preset
        self.tokenizer = tokenizer
        self.labels = label_token_ids(tokenizer, preset)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAICompletionsPrm:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(settings.prm_tokenizer or settings.prm_model)
        preset = resolve_prm_preset(settings.prm_preset, settings.prm_model)
        client = _client(settings, "openai-completions-prm")
        return cls(
            str(settings.prm_base_url),
            model=settings.prm_served_name,
            preset=preset,
            tokenizer=tokenizer,
            client=client,
        )

    def prompts(self, question: str, steps: Sequence[str], start: int = 0) -> list[list[int]]:
        """Token ids of each step's prefix from step ``start`` on, ending at the last token of its tag."""
        ids, positions = encode_path(self.tokenizer, self.preset, question, steps)
        return [ids[: position + 1] for position in positions[start:]]

    async def _score_request(self, request: ScoreRequest) -> list[list[float]]:
        """One ``/completions`` call for the whole request: a prompt per step not in ``known`` (a causal PRM's
        earlier scores do not change), over all its paths."""
        known = request.known or [()] * len(request.paths)
        starts = [min(len(k), len(path)) for path, k in zip(request.paths, known, strict=True)]
        prompts = [
            prompt
            for path, start in zip(request.paths, starts, strict=True)
            for prompt in self.prompts(request.question, path, start)
        ]
        fresh: list[float] = []
        if prompts:
            payload = completion_request(prompts, self.labels, model=self.model)
            response = await self._client.post(self.url, payload, CompletionResponse)
            fresh = scores_from_completions(response, self.labels, len(prompts))
        scores, offset = [], 0
        for path, k, start in zip(request.paths, known, starts, strict=True):
            new = len(path) - start
            scores.append([*k[:start], *fresh[offset : offset + new]])
            offset += new
        return scores
