"""A small LRU of decoded images, so a request's image is fetched and decoded once per worker."""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from PIL import Image


def decode_rgb(data: bytes) -> Image.Image:
    """The image in ``data`` decoded to RGB (blocking: tens of milliseconds to a second for large images)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class DecodedImageCache:
    def __init__(self, fetch: Callable[[str], Awaitable[bytes]], capacity: int = 64) -> None:
        self._fetch = fetch
        self._capacity = capacity
        self._images: OrderedDict[str, Image.Image] = OrderedDict()

    async def get(self, image_id: str) -> Image.Image:
        image = self._images.get(image_id)
        if image is None:
            data = await self._fetch(image_id)
            # decoded in a worker thread: the worker's loop keeps feeding the engine and writing results meanwhile
            image = await asyncio.to_thread(decode_rgb, data)
            self._images[image_id] = image
            while len(self._images) > self._capacity:
                self._images.popitem(last=False)
        self._images.move_to_end(image_id)
        return image
