"""A small LRU of decoded images, so a request's image is fetched and decoded once per worker."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from PIL import Image


class DecodedImageCache:
    def __init__(self, fetch: Callable[[str], Awaitable[bytes]], capacity: int = 64) -> None:
        self._fetch = fetch
        self._capacity = capacity
        self._images: OrderedDict[str, Image.Image] = OrderedDict()

    async def get(self, image_id: str) -> Image.Image:
        image = self._images.get(image_id)
        if image is None:
            data = await self._fetch(image_id)
            image = Image.open(io.BytesIO(data)).convert("RGB")
            self._images[image_id] = image
            while len(self._images) > self._capacity:
                self._images.popitem(last=False)
        self._images.move_to_end(image_id)
        return image
