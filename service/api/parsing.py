"""Turns a ``/solve`` body (JSON or multipart) into validated ``SolveParams`` and image bytes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from atomthink.errors import ImageTooLarge, InvalidRequest, UnsupportedMediaType
from atomthink.settings import Settings
from service.api.errors import validation_to_error
from service.images import checked_image, decode_base64_image
from service.schemas import SolveParams

MAX_FORM_FIELDS = 64
MAX_TEXT_BYTES = 256 * 1024
"""Room for a request's text fields, beside its image."""


def body_limit(settings: Settings) -> int:
    """The largest request body: the image base64-encoded at its size limit, and the text."""
    return settings.max_image_bytes * 4 // 3 + MAX_TEXT_BYTES


async def read_solve_request(request: Request, settings: Settings) -> tuple[SolveParams, bytes | None]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = body_limit(settings)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ImageTooLarge(f"request body is over the {limit} byte limit", field="image")
    if content_type == "application/json":
        fields, image = await _read_json(request, settings, limit)
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields, image = await _read_form(request, settings)
    else:
        raise UnsupportedMediaType(
            f"content type {content_type or 'none'!r} is not supported; send application/json or multipart/form-data"
        )
    try:
        params = SolveParams.model_validate(fields)
    except ValidationError as exc:
        raise validation_to_error(exc) from None
    if image is not None:
        image = await checked_image(image, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    return params, image


async def _read_json(request: Request, settings: Settings, limit: int) -> tuple[dict[str, Any], bytes | None]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ImageTooLarge(f"request body is over the {limit} byte limit", field="image")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    image_value = data.pop("image", None)
    if image_value is None:
        return data, None
    if not isinstance(image_value, str):
        raise InvalidRequest("image must be a base64 string or a data URL", field="image")
    return data, decode_base64_image(image_value, settings.max_image_bytes)


async def _read_form(request: Request, settings: Settings) -> tuple[dict[str, Any], bytes | None]:
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_TEXT_BYTES)
    except Exception as exc:  # malformed multipart bodies raise a variety of parser errors
        raise InvalidRequest(f"multipart body cannot be parsed: {exc}") from None
    try:
        fields: dict[str, Any] = {}
        image: bytes | None = None
        for key in set(form.keys()):
            values = form.getlist(key)
            if key == "image":
                part = values[0]
                if isinstance(part, UploadFile):
                    image = await part.read(settings.max_image_bytes + 1)
                elif part:
                    image = decode_base64_image(str(part), settings.max_image_bytes)
                continue
            if any(isinstance(v, UploadFile) for v in values):
                raise InvalidRequest(f"unexpected file part {key!r}; only 'image' may be a file", field=key)
            texts = [v for v in values if isinstance(v, str)]
            if key == "choices":
                fields[key] = _parse_choices(texts)
            elif texts and texts[-1] != "":
                fields[key] = texts[-1]
        return fields, image
    finally:
        await form.close()


def _parse_choices(values: list[str]) -> list[str]:
    """``choices`` as repeated form fields, or one field holding a JSON list."""
    if len(values) == 1 and values[0].lstrip().startswith("["):
        try:
            parsed = json.loads(values[0])
        except json.JSONDecodeError:
            raise InvalidRequest("choices is not a valid JSON list", field="choices") from None
        if not isinstance(parsed, list) or not all(isinstance(c, str) for c in parsed):
            raise InvalidRequest("choices must be a list of strings", field="choices")
        return parsed
    return values
