"""The step queue between the search orchestrator and the workers: interfaces and implementations."""

from atomthink.queue.base import JobClient, JobSource, image_id_for
from atomthink.queue.memory import InMemoryStepQueue

__all__ = ["InMemoryStepQueue", "JobClient", "JobSource", "image_id_for"]
