"""Image intake: decode base64 or data URLs and reject what is not a sane image, before any work is queued."""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image, UnidentifiedImageError

from atomthink.errors import ImageTooLarge, InvalidImage

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
