"""The one error mapping: typed errors to status, code and headers; our renderer and OpenAI's over the same mapping."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from atomthink.errors import (
    ContextTooLong,
    Draining,
    ImageTooLarge,
    InvalidRequest,
    JobTimeout,
    Overloaded,
    QuotaExceeded,
    Unauthorized,
)
from service.api.errors import error_body, http_error, openai_error_body, openai_status
from service.api.openai_protocol import OpenAIError


@pytest.mark.parametrize(
    ("exc", "status", "headers"),
    [
        (InvalidRequest("bad", field="question"), 422, {}),
        (ImageTooLarge("big", field="image"), 413, {}),
        (ContextTooLong("long", field="question"), 400, {}),
        (Unauthorized("no key"), 401, {"WWW-Authenticate": "Bearer"}),
        (Overloaded("busy", retry_after_s=2), 429, {"Retry-After": "2"}),
        (QuotaExceeded("over", retry_after_s=7), 429, {"Retry-After": "7"}),
        (Draining("bye"), 503, {"Retry-After": "1"}),
        (JobTimeout("slow"), 503, {}),
    ],
)
def test_typed_errors_keep_status_code_and_get_their_headers(exc: Exception, status: int, headers: dict) -> None:
    error = http_error(exc)
    assert (error.status, error.headers) == (status, headers)
    assert error.rejected == (status < 500)
    assert error_body(error).model_dump() == {"error": {"code": error.code, "message": str(exc), "field": error.field}}


def test_openai_renderer_answers_in_openai_shape_with_400_for_invalid_requests() -> None:
    invalid = http_error(InvalidRequest("temperature: too hot", field="temperature"))
    assert openai_status(invalid) == 400
    body = OpenAIError.model_validate(openai_error_body(invalid)).error
    assert (body.type, body.param, body.code) == ("invalid_request_error", "temperature", "invalid_request")
    assert OpenAIError.model_validate(openai_error_body(http_error(QuotaExceeded("over")))).error.type == (
        "rate_limit_error"
    )
    assert openai_error_body(http_error(JobTimeout("slow")))["error"]["type"] == "server_error"


def test_validation_errors_name_their_field_and_untyped_errors_hide_their_detail() -> None:
    class Body(BaseModel):
        top_p: float = Field(le=1)

    with pytest.raises(ValidationError) as caught:
        Body(top_p=2)
    error = http_error(caught.value)
    assert (error.status, error.code, error.field) == (422, "invalid_request", "top_p")
    assert error.rejected
    secret = http_error(RuntimeError("password=hunter2"))
    assert (secret.status, secret.code, secret.rejected) == (500, "internal_error", False)
    assert "hunter2" not in secret.message
    assert http_error(HTTPException(404, "no route")).code == "not_found"
