"""Math-Shepherd rollout labels computed by the serving cluster: every policy call is a job on the service's queue.

The labeller is a client of the step queue (``atomthink.queue.JobClient``, Redis Streams), exactly as the gateway is:
it stores each problem's image once, submits one ``PolicyJob`` per atomic step and waits for the result. Any number
of ``atomthink worker policy`` processes, on any nodes that reach the Redis, take those jobs in batches; adding
workers adds throughput, and a worker that dies hands its jobs to the others (the queue's visibility timeout).

For every problem ``samples`` QuickThink paths are sampled (invalid steps resampled by the preset's step rules, as
QuickThink does). A path whose final answer matches the reference (``research.eval.matching``) is ``+`` throughout.
For a wrong path, its prefixes are completed ``rollouts`` times, one step longer at a time: a prefix whose
completions reach the reference at least once keeps its last step ``+``; the first step no completion rescues is
``-``, and so is every step after it (Math-Shepherd's hard estimate, the engine's first-error convention).
Problems run concurrently (``concurrency``), so the workers always have batches to fill.

    ATOMTHINK_REDIS_URL=redis://127.0.0.1:6379/0 ATOMTHINK_POLICY_MODEL=models/atomthink-tiny-policy \
        atomthink label rollouts --data data/train --out data/prm-cluster --problems 200
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from atomthink.errors import AtomThinkError
from atomthink.prm_format import get_prm_preset
from atomthink.prompts import PromptPreset, format_question, resolve_prompt_preset
from atomthink.protocol import PolicyJob, SamplingParams
from atomthink.queue import JobClient, make_queue
from atomthink.settings import Settings
from atomthink.steps import StepRules, get_step_rules
from research.eval.datasets import EvalItem, load_items
from research.eval.matching import match_answer, prediction_of


@dataclass
class ClusterLabelConfig:
    data: str
    """A problems file or folder in a format ``research.eval.datasets`` reads (synthetic, MathVista, MathVerse)."""
    out: str
    """Output folder: ``prm.jsonl`` (one record per labelled path) and ``meta.json``."""
    problems: int = 200
    offset: int = 0
    samples: int = 4
    """QuickThink paths sampled per problem."""
    rollouts: int = 4
    """Completions per prefix of a wrong path."""
    temperature: float = 0.7
    rollout_temperature: float | None = None
    """Temperature of the labelling completions (default: ``temperature``)."""
    top_p: float | None = None
    """Nucleus sampling of every call (default: the prompt preset's)."""
    top_k: int | None = None
    """Top-k of every call, 0 = off (default: the prompt preset's)."""
    max_depth: int = 12
    retries: int = 3
    """Resamples of a step the preset's rules reject (the last one is kept)."""
    concurrency: int = 32
    """Problems labelled at once; each keeps up to ``samples * rollouts`` jobs in flight."""
    max_jobs_in_flight: int = 96
    """Policy jobs submitted and not yet answered, at most (enough to fill a few workers' batches; each waiting
    submit may hold one of the Redis client's 100 pooled connections while it enqueues)."""
    prm_preset: str = "math-psa"
    """Whose step tag joins the steps of ``process`` in the records (``atomthink.prm_format``)."""
    seed: int = 0


@dataclass
class ProblemLabels:
    item: EvalItem
    paths: list[list[str]] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    rollouts: int = 0
    jobs: int = 0


def question_of(item: EvalItem) -> str:
    """The question as the gateway sends it to the policy (options appended as ``(A) ...`` lines)."""
    return format_question(item.question, item.choices)


def _seed(*parts: object) -> int:
    """A stable 31-bit sampling seed for one call (same config, same samples, whatever the batching)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") >> 1


class ClusterLabeller:
    """Samples and labels paths of one problem at a time through a ``JobClient``; safe to run many concurrently."""

    def __init__(
        self,
        client: JobClient,
        cfg: ClusterLabelConfig,
        preset: PromptPreset,
        *,
        max_new_tokens: int,
        job_timeout_s: float,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.preset = preset
        self.rules: StepRules = get_step_rules(preset.step_rules)
        self.max_new_tokens = max_new_tokens
        self.job_timeout_s = job_timeout_s
        self._in_flight = asyncio.Semaphore(cfg.max_jobs_in_flight)

    async def _steps(
        self, item: EvalItem, image_id: str | None, prefix: Sequence[str], n: int, temperature: float, tag: object
    ) -> tuple[list[str], int]:
        """``n`` next steps after ``prefix`` (one job, ``n`` candidates; rejected ones resampled); jobs used."""
        previous = prefix[-1] if prefix else None
        chosen: list[str | None] = [None] * n
        missing = list(range(n))
        jobs = 0
        for attempt in range(self.cfg.retries + 1):
            job = PolicyJob(
                request_id=f"label-{item.id}",
                question=question_of(item),
                image_id=image_id,
                steps=list(prefix),
                prompt_preset=self.preset.name,
                sampling=SamplingParams(
                    n=len(missing),
                    temperature=temperature,
                    top_p=self.cfg.top_p if self.cfg.top_p is not None else self.preset.sampling.top_p,
                    top_k=self.cfg.top_k if self.cfg.top_k is not None else self.preset.sampling.top_k,
                    max_new_tokens=self.max_new_tokens,
                    seed=_seed(self.cfg.seed, item.id, tag, len(prefix), attempt),
                ),
            )
            async with self._in_flight:
                result = await self.client.call(job, self.job_timeout_s)
            jobs += 1
            if result.error is not None:
                raise LabelJobFailed(f"{item.id}: {result.error.code}: {result.error.message}")
            still = []
            for slot, candidate in zip(missing, result.candidates, strict=True):
                if self.rules.check(candidate.text, previous).invalid is None or attempt == self.cfg.retries:
                    chosen[slot] = candidate.text
                else:
                    still.append(slot)
            missing = still
            if not missing:
                break
        return [c or "" for c in chosen], jobs

    async def complete(
        self, item: EvalItem, image_id: str | None, prefix: Sequence[str], n: int, temperature: float, tag: object
    ) -> tuple[list[list[str]], int]:
        """``n`` QuickThink completions of ``prefix`` (to a final step or ``max_depth``); jobs used.

        The first step of all ``n`` is one job with ``n`` candidates (same prompt); then every path goes on alone."""
        if prefix and self.rules.check(prefix[-1], prefix[-2] if len(prefix) > 1 else None).final:
            return [list(prefix) for _ in range(n)], 0
        if len(prefix) >= self.cfg.max_depth:
            return [list(prefix) for _ in range(n)], 0
        firsts, jobs = await self._steps(item, image_id, prefix, n, temperature, (tag, "first"))

        async def go_on(k: int, first: str) -> tuple[list[str], int]:
            path, used = [*prefix, first], 0
            while not self.rules.check(path[-1], path[-2] if len(path) > 1 else None).final:
                if len(path) >= self.cfg.max_depth:
                    break
                (step,), spent = await self._steps(item, image_id, path, 1, temperature, (tag, k))
                path.append(step)
                used += spent
            return path, used

        done = await asyncio.gather(*(go_on(k, first) for k, first in enumerate(firsts)))
        return [p for p, _ in done], jobs + sum(u for _, u in done)

    def correct(self, item: EvalItem, path: Sequence[str]) -> bool:
        if not path or not self.rules.check(path[-1], path[-2] if len(path) > 1 else None).final:
            return False
        return match_answer(prediction_of(None, path, item), item).correct

    async def label(self, item: EvalItem, image: bytes | None) -> ProblemLabels:
        """Sample ``samples`` paths of one problem (duplicates merged) and label each."""
        image_id = await self.client.put_image(image) if image is not None else None
        sampled, jobs = await self.complete(item, image_id, [], self.cfg.samples, self.cfg.temperature, "sample")
        unique: dict[tuple[str, ...], list[str]] = {}
        for path in sampled:
            unique.setdefault(tuple(path), path)
        out = await self.label_paths(item, image_id, list(unique.values()))
        out.jobs += jobs
        return out

    async def label_paths(self, item: EvalItem, image_id: str | None, paths: list[list[str]]) -> ProblemLabels:
        """Math-Shepherd hard labels of given paths of one problem (all ``+`` for a right path; rollouts otherwise)."""
        out = ProblemLabels(item, paths=paths, correct=[self.correct(item, p) for p in paths])
        temperature = self.cfg.rollout_temperature if self.cfg.rollout_temperature is not None else self.cfg.temperature

        async def label_path(k: int, path: list[str]) -> tuple[list[str], int, int]:
            if out.correct[k]:
                return ["+"] * len(path), 0, 0
            labels: list[str] = []
            rollouts = jobs = 0
            for depth in range(1, len(path)):
                done, used = await self.complete(
                    item, image_id, path[:depth], self.cfg.rollouts, temperature, ("rollout", k, depth)
                )
                rollouts += len(done)
                jobs += used
                if not any(self.correct(item, d) for d in done):
                    break
                labels.append("+")
            return labels + ["-"] * (len(path) - len(labels)), rollouts, jobs

        results = await asyncio.gather(*(label_path(k, p) for k, p in enumerate(paths)))
        out.labels = [lab for lab, _, _ in results]
        out.rollouts = sum(r for _, r, _ in results)
        out.jobs = sum(j for _, _, j in results)
        return out


class LabelJobFailed(RuntimeError):
    """A worker answered a labelling job with a typed error (e.g. a preset mismatch): the run stops."""


def _read_image(item: EvalItem) -> bytes | None:
    return item.image.read_bytes() if item.image is not None else None


def record_of(result: ProblemLabels, k: int, step_tag: str) -> dict[str, Any]:
    """One PRM record in the official AmATH-PRM layout (``question``, ``process``, ``label``) plus provenance."""
    path = result.paths[k]
    return {
        "id": f"{result.item.id}-r{k}",
        "question": question_of(result.item),
        "process": "".join(step + step_tag for step in path),
        "label": result.labels[k],
        "image": str(result.item.image) if result.item.image is not None else None,
        "source": "rollout",
        "answer": result.item.answer,
    }


async def label_with_cluster(
    cfg: ClusterLabelConfig, settings: Settings, client: JobClient | None = None, progress: bool = True
) -> dict[str, Any]:
    """Label ``cfg.problems`` problems through the queue ``settings`` names; writes ``prm.jsonl`` and ``meta.json``."""
    items = load_items(cfg.data, limit=cfg.offset + cfg.problems)[cfg.offset :]
    preset = resolve_prompt_preset(settings.prompt_preset, settings.policy_model)
    step_tag = get_prm_preset(cfg.prm_preset).step_tag
    own = client is None
    queue: Any = make_queue(settings.model_copy(update={"queue": "redis"})) if client is None else client
    labeller = ClusterLabeller(
        queue,
        cfg,
        preset,
        max_new_tokens=settings.max_step_tokens or preset.step_max_tokens,
        job_timeout_s=settings.job_timeout_s,
    )
    out = Path(cfg.out)
    gate = asyncio.Semaphore(cfg.concurrency)
    bar = tqdm(total=len(items), desc="rollout labels", unit="problem", disable=not progress)
    t0 = time.perf_counter()

    async def one(item: EvalItem) -> ProblemLabels | tuple[EvalItem, str]:
        async with gate:
            try:
                image = await asyncio.to_thread(_read_image, item)
                result: ProblemLabels | tuple[EvalItem, str] = await labeller.label(item, image)
            except (AtomThinkError, LabelJobFailed, OSError) as exc:  # the problem is recorded as failed, not lost
                result = (item, f"{type(exc).__name__}: {exc}"[:500])
        bar.update(1)
        bar.set_postfix(problems_per_s=f"{bar.n / (time.perf_counter() - t0):.2f}")
        return result

    try:
        results = list(await asyncio.gather(*(one(item) for item in items)))
    finally:
        bar.close()
        if own:
            await queue.close()
    seconds = time.perf_counter() - t0
    counts = await asyncio.to_thread(write_records, out, results, step_tag)
    summary = {
        "config": asdict(cfg),
        "prompt_preset": preset.name,
        "problems": len(items),
        **counts,
        "seconds": round(seconds, 2),
        "problems_per_s": round(len(items) / seconds, 3) if seconds > 0 else None,
        "jobs_per_s": round(counts["policy_jobs"] / seconds, 2) if seconds > 0 else None,
    }
    await asyncio.to_thread((out / "meta.json").write_text, json.dumps(summary, indent=2) + "\n")
    return summary


def write_records(out: Path, results: list[ProblemLabels | tuple[EvalItem, str]], step_tag: str) -> Counter[str]:
    """``prm.jsonl`` of all labelled paths and ``failed.jsonl`` of the problems a job failed for (with why);
    returns the counts for the summary."""
    out.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    with open(out / "prm.jsonl", "w") as f, open(out / "failed.jsonl", "w") as failed:
        for result in results:
            if isinstance(result, tuple):
                failed.write(json.dumps({"id": result[0].id, "reason": result[1]}) + "\n")
                counts["failed_problems"] += 1
                continue
            for k in range(len(result.paths)):
                f.write(json.dumps(record_of(result, k, step_tag)) + "\n")
                counts["paths"] += 1
                counts["correct_paths"] += int(result.correct[k])
                counts["steps"] += len(result.labels[k])
                counts["negative_steps"] += result.labels[k].count("-")
            counts["rollouts"] += result.rollouts
            counts["policy_jobs"] += result.jobs
    return counts
