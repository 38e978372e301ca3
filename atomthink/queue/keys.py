"""Every Redis key the step queue uses, in one place, under a configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass

from atomthink.protocol import Role


@dataclass(frozen=True)
class QueueKeys:
    prefix: str = "atomthink"

    def stream(self, role: Role) -> str:
        """Jobs of one role; read by the consumer group ``group``."""
        return f"{self.prefix}:stream:{role}"

    @property
    def group(self) -> str:
        return f"{self.prefix}:workers"

    def reply_stream(self, gateway_id: str) -> str:
        """Results for the jobs one gateway instance submitted."""
        return f"{self.prefix}:reply:{gateway_id}"

    @property
    def dead_letters(self) -> str:
        """Jobs delivered too many times, with the reason."""
        return f"{self.prefix}:dead"

    def image(self, image_id: str) -> str:
        """Encoded image bytes under their content hash, with a TTL."""
        return f"{self.prefix}:image:{image_id}"

    def cancelled(self, request_id: str) -> str:
        """Present (with a TTL) while a request is cancelled; workers skip its jobs."""
        return f"{self.prefix}:cancelled:{request_id}"

    def workers(self, role: Role) -> str:
        """Sorted set of worker ids scored by their last heartbeat (unix seconds)."""
        return f"{self.prefix}:workers:{role}"

    def quota_running(self, key_name: str) -> str:
        """Sorted set of one API key's running requests, scored by their lease's expiry (unix ms)."""
        return f"{self.prefix}:quota:running:{key_name}"

    def quota_spent(self, key_name: str) -> str:
        """Sorted set of one API key's admitted requests ``lease:cost``, scored by admission time (unix ms)."""
        return f"{self.prefix}:quota:spent:{key_name}"
