"""The one place exceptions become HTTP responses: ``{"error": {"code", "message", "field"}}``, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from atomthink.errors import AtomThinkError, Draining, InvalidRequest, Overloaded, Unauthorized
from service import metrics

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status)


def validation_to_error(exc: ValidationError | RequestValidationError) -> InvalidRequest:
    """First pydantic error as an ``InvalidRequest`` naming its field."""
    first = exc.errors()[0]
    ctx = first.get("ctx") or {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    field = ctx.get("field") if isinstance(ctx.get("field"), str) else ".".join(loc) or None
    message = first.get("msg", "invalid value")
    if field and first.get("type") == "missing":
        message = f"{field} is required"
    elif field and not message.startswith(f"'{field}'"):
        message = f"{field}: {message}"
    return InvalidRequest(message, field=field)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AtomThinkError)
    async def _atomthink_error(request: Request, exc: AtomThinkError) -> JSONResponse:
        if exc.status_code < 500:
            metrics.REJECTED.labels(exc.code).inc()
        response = error_response(exc.status_code, exc.code, exc.message, exc.field)
        if isinstance(exc, Overloaded | Draining):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_to_error(exc)
        return error_response(error.status_code, error.code, error.message, error.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal_error", "internal error; see the gateway log")
