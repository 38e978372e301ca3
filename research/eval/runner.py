"""Runs evaluation items through the service, concurrently, resumably, one JSON line per finished item.

The service is either embedded in this process (:func:`embedded_client`, the same ``build_runtime`` that
``atomthink serve`` uses) or a running gateway (:class:`HttpSolveClient`). A result line is written as soon as its
item is graded, so an interrupted run loses nothing; a new run over the same results file skips every
``(run, dataset, id)`` already there (lines with a transient error are retried, others are final).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
from pydantic import ValidationError
from tqdm import tqdm

from atomthink.errors import AtomThinkError
from atomthink.settings import Settings
from research.eval.capabilities import align_to_tags, classify_step
from research.eval.datasets import EvalItem
from research.eval.judge import JudgeError, LlmJudge
from research.eval.matching import match_answer, prediction_of
from research.eval.suites import RunConfig
from service.schemas import SolveParams, SolveResponse

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 503)


class SolveClient(Protocol):
    """What the runner needs of the service."""

    async def solve(self, params: SolveParams, image: bytes | None) -> SolveResponse: ...


class SolveRequestError(Exception):
    """A solve that failed; ``transient`` ones are retried by the next run over the same results file."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class RuntimeSolveClient:
    """The embedded service: checks the image as the gateway does, then calls ``Runtime.solve``."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    async def checked_image(self, image: bytes | None) -> bytes | None:
        """The image as the gateway accepts it (decoded, size-checked, off the event loop)."""
        from service.images import validate_image

        if image is None:
            return None
        settings: Settings = self.runtime.settings
        try:
            checked: bytes = await asyncio.to_thread(
                validate_image, image, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            )
        except AtomThinkError as exc:
            raise SolveRequestError(f"{exc.code}: {exc.message}", transient=exc.recoverable) from exc
        return checked

    async def solve(self, params: SolveParams, image: bytes | None) -> SolveResponse:
        image = await self.checked_image(image)
        try:
            response: SolveResponse = await self.runtime.solve(params, image)
            return response
        except AtomThinkError as exc:
            raise SolveRequestError(f"{exc.code}: {exc.message}", transient=exc.recoverable) from exc


@contextlib.asynccontextmanager
async def embedded_client(settings: Settings) -> AsyncIterator[RuntimeSolveClient]:
    """Gateway, queue and workers in this process, loaded from ``settings``."""
    from atomthink_serve.embedded import build_runtime

    async with build_runtime(settings) as runtime:
        yield RuntimeSolveClient(runtime)


class HttpSolveClient:
    """A running gateway: ``POST {url}/solve`` with a JSON body (the image as base64)."""

    def __init__(self, url: str, *, timeout_s: float = 660.0, retries: int = 5) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def solve(self, params: SolveParams, image: bytes | None) -> SolveResponse:
        body: dict[str, Any] = params.model_dump(mode="json", exclude_none=True)
        if image is not None:
            body["image"] = base64.b64encode(image).decode("ascii")
        for attempt in range(self.retries + 1):
            try:
                response = await self._client.post(f"{self.url}/solve", json=body)
            except httpx.HTTPError as exc:
                raise SolveRequestError(f"gateway unreachable: {exc}", transient=True) from exc
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                await asyncio.sleep(min(30.0, float(response.headers.get("retry-after", 2**attempt))))
                continue
            if response.status_code != 200:
                raise SolveRequestError(
                    f"HTTP {response.status_code}: {response.text[:300]}", transient=response.status_code >= 429
                )
            return SolveResponse.model_validate(response.json())
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one evaluation run that are not the solve setting."""

    seed: int | None = 0
    """Base seed; each item gets its own seed from it (the same for every run config, for paired comparisons)."""
    max_steps: int = 20
    temperature: float | None = None
    deadline_ms: int | None = None
    concurrency: int = 4
    progress: bool = True
    capabilities: bool = False
    """Ask the judge (when there is one) for step capabilities of items without tags."""


def item_seed(base: int | None, item: EvalItem) -> int | None:
    """A stable per-item seed derived from the base seed."""
    if base is None:
        return None
    return zlib.crc32(f"{base}/{item.key}".encode()) % (2**31 - 1)


def result_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return str(record["run"]), str(record["dataset"]), str(record["id"])


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every record of a results file, the last one per ``(run, dataset, id)`` winning; a torn last line is
    ignored (an interrupted write)."""
    if not path.is_file():
        return []
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line (interrupted write?)", path)
                continue
            latest[result_key(record)] = record
    return list(latest.values())


def finished_keys(records: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Keys that a resumed run must not redo: graded items and items that failed for good."""
    return {result_key(r) for r in records if not r.get("error") or not r.get("error_transient")}


def _gold_text(item: EvalItem) -> str:
    """The gold answer as the judge should see it: a letter together with its option text."""
    letter = item.gold_letter
    if letter is not None and item.choices and ord(letter) - ord("A") < len(item.choices):
        return f"({letter}) {item.choices[ord(letter) - ord('A')]}"
    return item.answer


async def _grade(
    record: dict[str, Any], item: EvalItem, response: SolveResponse, judge: LlmJudge | None, options: RunOptions
) -> None:
    texts = [step.text for step in response.steps]
    prediction = prediction_of(response.answer, texts, item)
    verdict = match_answer(prediction, item)
    correct, method = verdict.correct, verdict.method
    if judge is not None and not correct and prediction:
        try:
            if await judge.equivalent(item.question, _gold_text(item), prediction):
                correct, method = True, "judge"
        except JudgeError as exc:
            log.warning("judge failed on %s: %s", item.key, exc)
    if item.steps:
        capabilities = align_to_tags(texts, item.steps)
    else:
        capabilities = [(classify_step(t), "rule") for t in texts]
        if judge is not None and options.capabilities:
            for i, text in enumerate(texts):
                with contextlib.suppress(JudgeError):
                    named = await judge.capability(item.question, text)
                    if named is not None:
                        capabilities[i] = (named, "judge")
    record.update(
        prediction=verdict.prediction,
        answer=response.answer,
        correct=correct,
        match=method,
        final=response.final,
        truncated=response.truncated,
        steps=[
            {"text": s.text, "score": s.score, "capability": c, "capability_source": src}
            for s, (c, src) in zip(response.steps, capabilities, strict=True)
        ],
        votes=response.votes,
        **response.stats.model_dump(),
        latency_ms=response.timings_ms.total,
        timings_ms=response.timings_ms.model_dump(),
    )


async def _solve_one(
    client: SolveClient, config: RunConfig, item: EvalItem, options: RunOptions, judge: LlmJudge | None
) -> dict[str, Any]:
    seed = item_seed(options.seed, item)
    record: dict[str, Any] = {
        **config.as_dict(),
        "dataset": item.dataset,
        "split": item.split,
        "id": item.id,
        "gold": item.answer,
        "gold_letter": item.gold_letter,
        "seed": seed,
        "error": None,
        "error_transient": False,
    }
    started = time.perf_counter()
    try:
        params = config.params(
            item.question,
            item.choices,
            seed=seed,
            max_steps=options.max_steps,
            temperature=options.temperature,
            deadline_ms=options.deadline_ms,
        )
        image = await asyncio.to_thread(item.image.read_bytes) if item.image is not None else None
        response = await client.solve(params, image)
    except (ValidationError, OSError, SolveRequestError) as exc:
        # A failed image read or a transient service error is retried by the next run; an invalid request is not.
        transient = isinstance(exc, OSError) or (isinstance(exc, SolveRequestError) and exc.transient)
        record.update(correct=False, match="none", steps=[], error=str(exc)[:500], error_transient=transient)
        record["wall_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return record
    record["wall_ms"] = round((time.perf_counter() - started) * 1000, 3)
    await _grade(record, item, response, judge, options)
    return record


async def run_items(
    client: SolveClient,
    configs: Sequence[RunConfig],
    items: Sequence[EvalItem],
    results_path: Path,
    options: RunOptions,
    judge: LlmJudge | None = None,
) -> list[dict[str, Any]]:
    """Solve every (config, item) pair not yet finished in ``results_path``, appending one line per pair.

    Returns every record of the results file for these configs and items (old and new)."""
    results_path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_drop_torn_tail, results_path)
    done = finished_keys(await asyncio.to_thread(read_results, results_path))
    pending = [(c, i) for c in configs for i in items if (c.key, i.dataset, i.id) not in done]
    skipped = len(configs) * len(items) - len(pending)
    if skipped:
        log.info("resuming: %d of %d solves already in %s", skipped, len(configs) * len(items), results_path)
    sink = await asyncio.to_thread(results_path.open, "a", encoding="utf-8")
    try:
        await _run_pending(client, pending, sink, options, judge)
    finally:
        sink.close()
    wanted = {(c.key, i.dataset, i.id) for c in configs for i in items}
    return [r for r in await asyncio.to_thread(read_results, results_path) if result_key(r) in wanted]


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that an interrupted run left half-written, so that appended lines stay whole."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)
        log.warning("%s: dropped a half-written last line", path)


async def _run_pending(
    client: SolveClient,
    pending: Sequence[tuple[RunConfig, EvalItem]],
    sink: IO[str],
    options: RunOptions,
    judge: LlmJudge | None,
) -> None:
    queue = iter(pending)
    bar = tqdm(total=len(pending), desc="eval", unit="solve", disable=not options.progress, dynamic_ncols=True)
    tally = {"right": 0, "done": 0, "errors": 0}

    async def worker() -> None:
        for config, item in queue:
            record = await _solve_one(client, config, item, options, judge)
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            tally["done"] += 1
            tally["right"] += bool(record.get("correct"))
            tally["errors"] += record["error"] is not None
            bar.set_postfix(run=config.key, acc=f"{tally['right'] / tally['done']:.3f}", errors=tally["errors"])
            bar.update()

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(options.concurrency, len(pending) or 1)))))
    finally:
        bar.close()
