"""Image intake: decode base64 or data URLs and reject what is not a sane image, before any work is queued."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import warnings
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

from atomthink.errors import ImageTooLarge, InvalidImage, InvalidRequest

_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,", re.IGNORECASE)


def decode_base64_image(value: str, max_bytes: int) -> bytes:
    """Bytes of a base64 string or a ``data:`` URL; the size limit is checked before decoding."""
    match = _DATA_URL_RE.match(value)
    payload = value[match.end() :] if match else value
    payload = "".join(payload.split())
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageTooLarge(f"image is over the {max_bytes} byte limit", field="image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("image is not valid base64 (or a base64 data URL)", field="image") from None


def validate_image(data: bytes, *, max_bytes: int, max_pixels: int) -> bytes:
    """Return ``data`` unchanged when it is a complete image within the limits; raise a 4xx error otherwise."""
    if not data:
        raise InvalidImage("image is empty", field="image")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes, over the {max_bytes} byte limit", field="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} = {width * height} pixels, over the {max_pixels} pixel limit",
                    field="image",
                )
            image.load()
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image decodes to more than {max_pixels} pixels", field="image") from None
    except UnidentifiedImageError:
        raise InvalidImage("image is not a recognised image format", field="image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"image cannot be decoded ({exc})", field="image") from None
    return data


async def checked_image(data: bytes, *, max_bytes: int, max_pixels: int) -> bytes:
    """``validate_image`` in a worker thread: decoding a large image takes long enough (0.1-1 s for tens of
    megapixels) to stall every other request if it ran on the event loop."""
    return await asyncio.to_thread(validate_image, data, max_bytes=max_bytes, max_pixels=max_pixels)


async def image_from_url(
    url: str, *, field: str, allowed_hosts: Sequence[str], max_bytes: int, timeout_s: float
) -> bytes:
    """Bytes of a ``data:`` URL, or of an http(s) URL whose host is allowed (no redirects, size-limited).

    Any other address is refused: the gateway never fetches what a client names unless an operator allowed it.
    """
    if url.startswith("data:"):
        if not _DATA_URL_RE.match(url):
            raise InvalidImage("a data URL image must be base64 encoded (data:image/png;base64,...)", field=field)
        return decode_base64_image(url, max_bytes)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("image_url must be a data URL or an http(s) URL", field=field)
    if parts.hostname not in allowed_hosts:
        raise InvalidRequest(
            f"remote image URLs are refused (host {parts.hostname!r} is not allowed); send a data URL",
            field=field,
        )
    body = bytearray()
    try:
        async with (
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InvalidImage(f"image URL answered HTTP {response.status_code}", field=field)
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ImageTooLarge(f"image is over the {max_bytes} byte limit", field=field)
    except httpx.HTTPError as exc:
        raise InvalidImage(f"image URL cannot be fetched ({type(exc).__name__})", field=field) from None
    return bytes(body)
