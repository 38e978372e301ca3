"""``atomthink worker policy|prm``: one worker process on the Redis queue, with its own metrics and probe endpoint.

Exit status: 0 after SIGTERM/SIGINT (jobs in flight answered first); ``ENGINE_DEAD_EXIT`` (3) when its engine died or
hung (its jobs handed back to the queue first), for a supervisor to restart it; 1 when it cannot start."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

from atomthink.protocol import Role
from atomthink.queue import make_queue
from atomthink.queue.base import JobSource
from atomthink.settings import Settings
from workers.backends.base import PolicyBackend, StepScorer
from workers.backends.registry import close_backend, load_policy, load_prm
from workers.health import WorkerHealth, start_server
from workers.worker import PolicyWorker, PrmWorker

log = logging.getLogger(__name__)

ENGINE_DEAD_EXIT = 3
"""Exit status of a worker whose engine died or hung."""
CLOSE_TIMEOUT_S = 30.0
"""How long a worker with a dead engine waits for the engine to shut down before it exits anyway."""


def exit_at_once(code: int) -> NoReturn:
    """Leave now with ``code``: logs flushed, what is left of the engine (its child processes) killed, and the
    interpreter's teardown skipped. After a dead or hung engine that teardown joins vLLM's threads and
    multiprocessing resources and took 15 to 25 s on the CPU engine, a delay before the supervisor's restart for
    nothing: the jobs are handed back and the queue closed by then."""
    for child in _children(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from ``/proc``; none where there is no ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def make_policy_worker(source: JobSource, policy: PolicyBackend, settings: Settings) -> PolicyWorker:
    return PolicyWorker(
        source,
        policy,
        batch_size=settings.policy_batch_size,
        max_wait_s=settings.policy_max_wait_ms / 1000,
        max_inflight=settings.policy_max_inflight,
        continuous=None if settings.engine_feeding == "continuous" else False,
        health_interval_s=settings.engine_health_interval_s,
        probe_timeout_s=settings.engine_probe_timeout_s,
    )


def make_prm_worker(source: JobSource, prm: StepScorer, settings: Settings) -> PrmWorker:
    return PrmWorker(
        source,
        prm,
        batch_size=settings.prm_batch_size,
        max_wait_s=settings.prm_max_wait_ms / 1000,
        max_inflight=settings.prm_max_inflight,
        continuous=None if settings.engine_feeding == "continuous" else False,
        health_interval_s=settings.engine_health_interval_s,
        probe_timeout_s=settings.engine_probe_timeout_s,
    )


def set_torch_threads(settings: Settings) -> None:
    """Cap torch's intra-op threads when settings ask (several workers on one host)."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def redacted_url(url: str) -> str:
    """``url`` with its password (``redis://:secret@host``) masked, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{parts.netloc.rsplit('@', 1)[1]}"))


def serve_metrics(first_port: int, tries: int, health: WorkerHealth) -> int:
    """Start the metrics and probe endpoint on ``first_port`` or, when taken (several workers on one host), the next
    free one of ``tries`` ports; none free: exit with one line naming the ports and the flag."""
    for port in range(first_port, min(first_port + tries, 65536)):
        try:
            start_server(port, health)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        if port != first_port:
            log.warning("metrics port %d is taken: using %d", first_port, port)
        return port
    last = min(first_port + tries, 65536) - 1
    raise SystemExit(
        f"atomthink worker: metrics ports {first_port}-{last} are all taken; pass --metrics-port PORT (0: off)"
    )


async def run_worker(role: Role, settings: Settings) -> None:
    """Serve jobs of ``role`` until SIGTERM or SIGINT; the batch in flight is finished and answered first."""
    if settings.queue != "redis":
        raise SystemExit("a separate worker process needs the Redis queue: set ATOMTHINK_QUEUE=redis or --redis URL")
    set_torch_threads(settings)
    health = WorkerHealth(role)
    if settings.metrics_port:
        port = serve_metrics(settings.metrics_port, settings.metrics_port_tries, health)
        log.info("%s worker metrics on http://0.0.0.0:%d/metrics", role, port)
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

    def stop() -> None:
        health.stopping()
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    worker.on_unhealthy = health.unhealthy
    health.ready(worker.worker_id)
    log.info("%s worker %s serving %s", role, worker.worker_id, redacted_url(settings.redis_url))
    try:
        await worker.run()
    finally:
        await queue.close()
        if worker.unhealthy is None:
            close_backend(backend)
        else:  # a hung engine may not shut down cleanly: bounded, then the process exits anyway
            try:
                await asyncio.wait_for(asyncio.to_thread(close_backend, backend), CLOSE_TIMEOUT_S)
            except Exception:
                log.warning("%s worker: the dead engine did not shut down cleanly", role, exc_info=True)
    if worker.unhealthy is not None:
        log.error("%s worker %s exits %d: %s", role, worker.worker_id, ENGINE_DEAD_EXIT, worker.unhealthy)
        exit_at_once(ENGINE_DEAD_EXIT)
    log.info("%s worker %s stopped", role, worker.worker_id)
