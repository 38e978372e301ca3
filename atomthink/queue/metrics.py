"""Prometheus metrics of the step queue (prefix ``atomthink_queue_``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DEPTH = Gauge("atomthink_queue_waiting_jobs", "Jobs waiting for a worker", ["role"])
PENDING = Gauge("atomthink_queue_pending_jobs", "Jobs delivered to a worker and not yet answered", ["role"])
REDELIVERIES = Counter("atomthink_queue_redeliveries_total", "Jobs claimed from a dead or stuck worker", ["role"])
DEAD_LETTERS = Counter("atomthink_queue_dead_letters_total", "Jobs moved to the dead-letter stream", ["role"])

for _role in ("policy", "prm"):
    REDELIVERIES.labels(_role)
    DEAD_LETTERS.labels(_role)
