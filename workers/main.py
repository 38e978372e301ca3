"""``atomthink worker policy|prm``: one worker process on the Redis queue, with its own metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from atomthink.protocol import Role
from atomthink.settings import Settings
from service.runtime import make_policy_worker, make_prm_worker, make_queue
from workers.backends.registry import close_backend, load_policy, load_prm
from workers.worker import PolicyWorker, PrmWorker

log = logging.getLogger(__name__)


async def run_worker(role: Role, settings: Settings) -> None:
    """Serve jobs of ``role`` until SIGTERM or SIGINT; the batch in flight is finished and answered first."""
    if settings.queue != "redis":
        raise SystemExit("a separate worker process needs the Redis queue: set ATOMTHINK_QUEUE=redis or --redis URL")
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    queue = make_queue(settings)
    worker: PolicyWorker | PrmWorker
    backend: object
    if role == "policy":
        backend = await asyncio.to_thread(load_policy, settings)
        worker = make_policy_worker(queue, backend, settings)  # type: ignore[arg-type]
    else:
        backend = await asyncio.to_thread(load_prm, settings)
        worker = make_prm_worker(queue, backend, settings)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    log.info("%s worker %s serving %s", role, worker.worker_id, settings.redis_url)
    try:
        await worker.run()
    finally:
        await queue.close()
        close_backend(backend)
    log.info("%s worker %s stopped", role, worker.worker_id)
