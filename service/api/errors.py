"""The one place exceptions become HTTP: ``http_error`` maps any exception to a status, a code and the headers;
two renderers write the body, ours (``{"error": {"code", "message", "field"}}``) and, on the OpenAI-compatible
routes (``/v1/...``), OpenAI's (``{"error": {"message", "type", "param", "code"}}``). Never a trace.

Errors raised before a response starts come here through the app's exception handlers (which also count
``atomthink_rejected_requests_total`` on every route); errors in a stream that has started are rendered as an event
by the same renderers (``error_body``, ``openai_error_body``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from atomthink.errors import AtomThinkError, InvalidRequest, Unauthorized
from service import metrics
from service.schemas import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)

OPENAI_PREFIX = "/v1/"
"""Routes under this prefix answer errors in OpenAI's shape, so the official clients raise their typed errors."""

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


@dataclasses.dataclass(frozen=True)
class HttpError:
    """An exception as HTTP: what both renderers write, and the headers (set here only)."""

    status: int
    code: str
    message: str
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    rejected: bool = False
    """A typed refusal of the client's request (a 4xx of ours): counted in ``atomthink_rejected_requests_total``."""


def validation_to_error(exc: ValidationError | RequestValidationError) -> InvalidRequest:
    """First pydantic error as an ``InvalidRequest`` naming its field."""
    first = exc.errors()[0]
    ctx = first.get("ctx") or {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    field_name = ctx.get("field") if isinstance(ctx.get("field"), str) else ".".join(loc) or None
    message = first.get("msg", "invalid value")
    if field_name and first.get("type") == "missing":
        message = f"{field_name} is required"
    elif field_name and not message.startswith(f"'{field_name}'"):
        message = f"{field_name}: {message}"
    return InvalidRequest(message, field=field_name)


def http_error(exc: BaseException) -> HttpError:
    """The one mapping: typed errors keep their status and code, ``Retry-After`` for those that say when to retry,
    ``WWW-Authenticate`` for a missing key; anything untyped is a 500 whose detail stays in the log."""
    if isinstance(exc, ValidationError | RequestValidationError):
        exc = validation_to_error(exc)
    if isinstance(exc, AtomThinkError):
        headers: dict[str, str] = {}
        retry_after = getattr(exc, "retry_after_s", None)
        if isinstance(retry_after, int):
            headers["Retry-After"] = str(retry_after)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        return HttpError(exc.status_code, exc.code, exc.message, exc.field, headers, rejected=exc.status_code < 500)
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return HttpError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))
    log.error("unhandled error", exc_info=exc)
    return HttpError(500, "internal_error", "internal error; see the gateway log")


def error_body(error: HttpError) -> ErrorResponse:
    """Our renderer: ``{"error": {"code", "message", "field"}}``."""
    return ErrorResponse(error=ErrorBody(code=error.code, message=error.message, field=error.field))


def openai_status(error: HttpError) -> int:
    """OpenAI answers an invalid request with 400, where our routes say 422."""
    return 400 if error.status == 422 else error.status


def openai_error_body(error: HttpError) -> dict[str, Any]:
    """OpenAI's renderer: ``{"error": {"message", "type", "param", "code"}}`` (``OpenAIError`` in
    ``service.api.openai_protocol`` documents it)."""
    status = openai_status(error)
    kind = "rate_limit_error" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": error.message, "type": kind, "param": error.field, "code": error.code}}


def error_response(request: Request, exc: BaseException) -> JSONResponse:
    """The response for an error raised before a response started, in the shape of the route's API."""
    error = http_error(exc)
    if error.rejected:
        metrics.REJECTED.labels(error.code).inc()
    if request.url.path.startswith(OPENAI_PREFIX):
        return JSONResponse(openai_error_body(error), status_code=openai_status(error), headers=error.headers)
    return JSONResponse(error_body(error).model_dump(), status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, exc)

    for kind in (AtomThinkError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
