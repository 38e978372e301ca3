"""A small Server-Sent Events reader for tests: (event name, parsed JSON data) pairs, and the comment lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SseEvent:
    event: str
    data: Any
    comments: list[str] = field(default_factory=list)
    """Comment lines (keep-alives) received since the previous event."""


def read_events(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Events of a ``text/event-stream`` body given line by line (``httpx.Response.iter_lines``)."""
    name, data, comments = "message", [], []
    for line in lines:
        if line == "":
            if data:
                payload = "\n".join(data)
                yield SseEvent(name, payload if payload == "[DONE]" else json.loads(payload), comments)
                comments = []
            name, data = "message", []
        elif line.startswith(":"):
            comments.append(line[1:].strip())
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
