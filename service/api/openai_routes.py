"""OpenAI-compatible facade: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain or streamed).

Errors on these routes take OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so the official
clients raise their typed exceptions (a bad request is a 400 ``BadRequestError``); ``service.api.errors`` renders
them, for every route under ``/v1/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ValidationError

from atomthink.errors import AtomThinkError, InvalidRequest, ModelNotFound, Overloaded
from service.api.auth import AuthDep
from service.api.errors import http_error, openai_error_body, validation_to_error
from service.api.openai_protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Delta,
    Model,
    ModelList,
    OpenAIError,
    completion,
    finish_reason,
    usage,
)
from service.api.parsing import body_limit
from service.api.routes import QuotasDep
from service.api.stream import (
    EVENT_STREAM,
    SearchUpdate,
    event_stream,
    render_solve,
    solve_until_disconnect,
)
from service.events import ExpansionEvent, SelectionEvent
from service.images import checked_image, image_from_url
from service.quotas import solve_cost
from service.runtime import Runtime
from service.schemas import SolveParams, SolveResponse

OPENAI_SCHEMAS: list[type[BaseModel]] = [ChatCompletionRequest, ChatCompletionChunk, OpenAIError]
"""Models the OpenAPI document lists for these routes beyond their response models."""

STARTED = int(time.time())


router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

_CHAT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
    }
}
_CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A chat completion, or with stream: true, Server-Sent Events each carrying a "
        "ChatCompletionChunk (reasoning deltas per accepted step, then the content), then 'data: [DONE]'.",
        "content": {EVENT_STREAM: {"schema": {"$ref": "#/components/schemas/ChatCompletionChunk"}}},
    },
    **{code: {"model": OpenAIError} for code in (400, 401, 404, 413, 415, 429, 503)},
}


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/models", response_model=ModelList)
async def list_models(request: Request, _principal: AuthDep) -> ModelList:
    """The one model this gateway serves (``served_model_name``)."""
    return ModelList(data=[Model(id=_runtime(request).settings.served_model_name, created=STARTED)])


@router.post("/chat/completions", response_model=ChatCompletion, openapi_extra=_CHAT_BODY, responses=_CHAT_RESPONSES)
async def chat_completions(
    request: Request, principal: AuthDep, quotas: QuotasDep
) -> ChatCompletion | EventSourceResponse:
    """A chat completion: the last user message (text and at most one image) is the question.

    ``reasoning_effort`` picks the mode (none: direct, minimal: cot, low: quick, medium: slow beam, high and xhigh:
    wider beams); ``atomthink`` holds search knobs. The answer is ``message.content``, the atomic steps are
    ``message.reasoning``, and ``atomthink`` carries the solve response (scores, stats, timings).
    """
    runtime = _runtime(request)
    settings = runtime.settings
    admission: asyncio.Semaphore = request.app.state.admission
    if admission.locked():
        raise Overloaded(f"{settings.max_in_flight} requests already in flight", retry_after_s=1)
    chat = await _read_chat_request(request, body_limit(settings))
    if chat.model != settings.served_model_name:
        raise ModelNotFound(f"model {chat.model!r} is not served here; GET /v1/models lists it", field="model")
    question, urls = chat.question_and_image_urls()
    if len(urls) > 1:
        raise InvalidRequest("at most one image per request", field=urls[1][1])
    params = chat.solve_params(question)
    image = None
    if urls:
        url, field = urls[0]
        data = await image_from_url(
            url,
            field=field,
            allowed_hosts=settings.image_url_hosts,
            max_bytes=settings.max_image_bytes,
            timeout_s=settings.image_url_timeout_s,
        )
        try:
            image = await checked_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        except AtomThinkError as exc:
            raise type(exc)(exc.message, field=field) from None
    created = int(time.time())
    if chat.stream:
        include_usage = chat.stream_options is not None and chat.stream_options.include_usage
        lease = contextlib.AsyncExitStack()  # the API key's quota share, held until the stream ends
        await lease.enter_async_context(quotas.admit(principal, solve_cost(params)))
        return event_stream(
            request,
            lambda: _chunks(runtime, params, image, chat.model, created, include_usage=include_usage),
            lease.aclose,
        )
    async with admission, quotas.admit(principal, solve_cost(params)):
        response = await solve_until_disconnect(request, runtime, params, image)
    return completion(response, chat.model, created)


async def _read_chat_request(request: Request, limit: int) -> ChatCompletionRequest:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InvalidRequest(f"request body is over the {limit} byte limit", field="messages")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("body is not valid JSON") from None
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_to_error(exc) from None


def accepted_path(kept: list[int], parents: dict[int, int | None]) -> list[int]:
    """Node ids every kept node descends from: steps no later selection can take back."""
    paths = []
    for node_id in kept:
        path: list[int] = []
        current: int | None = node_id
        while current is not None:
            path.append(current)
            current = parents[current]
        paths.append(path[::-1])
    common: list[int] = []
    for ids in zip(*paths, strict=False):
        if len(set(ids)) > 1:
            break
        common.append(ids[0])
    return common


async def _chunks(
    runtime: Runtime, params: SolveParams, image: bytes | None, model: str, created: int, *, include_usage: bool
) -> AsyncGenerator[ServerSentEvent, None]:
    """The streamed completion: a reasoning delta per accepted step, then the content, the end, ``[DONE]``."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"

    def data(message: ChatCompletionChunk) -> ServerSentEvent:
        return ServerSentEvent(raw_data=message.model_dump_json(exclude_none=True))

    def chunk(delta: Delta, **fields: Any) -> ServerSentEvent:
        choice = ChunkChoice(delta=delta, finish_reason=fields.pop("finish_reason", None))
        return data(ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=[choice], **fields))

    def reasoning(text: str, first: bool) -> ServerSentEvent:
        text = text if first else "\n" + text
        return chunk(Delta(reasoning=text, reasoning_content=text))

    texts: dict[int, str] = {}
    parents: dict[int, int | None] = {}
    sent: list[int] = []

    def render(item: SearchUpdate | SolveResponse) -> Iterator[ServerSentEvent]:
        if isinstance(item, ExpansionEvent):
            for node in item.nodes:
                texts[node.id], parents[node.id] = node.text, node.parent
        elif isinstance(item, SelectionEvent):
            accepted = accepted_path(item.kept, parents)
            if accepted[: len(sent)] == sent:
                for node_id in accepted[len(sent) :]:
                    yield reasoning(texts[node_id], first=not sent)
                    sent.append(node_id)
        elif isinstance(item, SolveResponse):
            for step in item.steps[len(sent) :]:
                yield reasoning(step.text, first=not sent)
                sent.append(-1)
            if item.answer:
                yield chunk(Delta(content=item.answer))
            yield chunk(Delta(), finish_reason=finish_reason(item), atomthink=item)
            if include_usage:
                yield data(
                    ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=[], usage=usage(item))
                )

    def render_error(exc: Exception) -> ServerSentEvent:
        body = OpenAIError.model_validate(openai_error_body(http_error(exc)))
        return ServerSentEvent(raw_data=body.model_dump_json())

    yield chunk(Delta(role="assistant", content=""))
    async for event in render_solve(runtime, params, image, render, render_error):
        yield event
    yield ServerSentEvent(raw_data="[DONE]")
