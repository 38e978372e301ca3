"""One error taxonomy. Each error knows its HTTP status, its machine-readable code and whether a retry may help.

The gateway maps these to ``{"error": {"code", "message", "field"}}`` in one place (``service.api.errors``).
"""

from __future__ import annotations


class AtomThinkError(Exception):
    """Base of every error the service reports to a client."""

    status_code = 500
    code = "internal_error"
    recoverable = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(AtomThinkError):
    """The request is malformed or out of range; retrying it unchanged will fail again."""

    status_code = 422
    code = "invalid_request"


class InvalidImage(InvalidRequest):
    """The image cannot be decoded, is truncated, or is not an image."""

    status_code = 400
    code = "invalid_image"


class ImageTooLarge(InvalidRequest):
    """The image exceeds the encoded-size or decoded-pixel limit."""

    status_code = 413
    code = "image_too_large"


class UnsupportedMediaType(InvalidRequest):
    """The body is neither JSON nor multipart form data."""

    status_code = 415
    code = "unsupported_media_type"


class ModelNotFound(InvalidRequest):
    """The request names a model this service does not serve."""

    status_code = 404
    code = "model_not_found"


class Overloaded(AtomThinkError):
    """Too many requests in flight; retry after a short wait."""

    status_code = 429
    code = "overloaded"
    recoverable = True

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendUnavailable(AtomThinkError):
    """The queue, a worker or a model failed; the request may succeed later."""

    status_code = 503
    code = "backend_unavailable"
    recoverable = True


class JobFailed(BackendUnavailable):
    """A worker reported a typed failure for one of the request's jobs."""

    code = "job_failed"


class JobTimeout(BackendUnavailable):
    """No worker answered a job within the job timeout."""

    code = "job_timeout"


class Draining(BackendUnavailable):
    """The gateway is shutting down (SIGTERM, a rolling update): it takes no new search, and one still running when
    its grace period ends is stopped; another gateway answers the retry."""

    code = "gateway_draining"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ContextTooLong(InvalidRequest):
    """The prompt with its token budget does not fit the policy's or the PRM's context window."""

    status_code = 400
    code = "context_length_exceeded"


class Unauthorized(AtomThinkError):
    """No API key, or one that is not configured; the same answer for both, so a probe learns nothing."""

    status_code = 401
    code = "unauthorized"


class QuotaExceeded(Overloaded):
    """The API key is over its concurrency or compute quota; retry after ``retry_after_s``."""

    code = "quota_exceeded"
