"""The step queue between the search orchestrator and the workers: interfaces and implementations."""

from __future__ import annotations

from atomthink.queue.base import JobClient, JobSource, image_id_for
from atomthink.queue.memory import InMemoryStepQueue
from atomthink.queue.redis_streams import RedisStepQueue
from atomthink.settings import Settings


def make_queue(settings: Settings) -> InMemoryStepQueue | RedisStepQueue:
    """The queue that settings name: Redis Streams (``queue=redis``) or the one-process memory queue."""
    if settings.queue == "redis":
        return RedisStepQueue(
            settings.redis_url,
            prefix=settings.key_prefix,
            max_queue_length=settings.max_queue_length,
            visibility_timeout_s=settings.visibility_timeout_s,
            max_deliveries=settings.max_deliveries,
            image_ttl_s=settings.image_ttl_s,
            cancel_ttl_s=settings.cancel_ttl_s,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
        )
    return InMemoryStepQueue(max_queued=settings.max_queue_length, heartbeat_ttl_s=settings.heartbeat_ttl_s)


__all__ = ["InMemoryStepQueue", "JobClient", "JobSource", "RedisStepQueue", "image_id_for", "make_queue"]
