"""The batch run: bounded concurrency, an append-only log, resume after a kill, a progress bar, a summary.

``annotations.jsonl`` in the output folder is the only state. Each finished problem appends ONE line (one
``os.write`` of the whole line on an ``O_APPEND`` descriptor). A run that is killed loses at most the problems in
flight; a resume reads the log, cuts off a trailing partial line, and annotates only the problems whose record id is
not there, so no record is lost or repeated. ``run.json`` holds the configuration; a resume with another one is
refused. The derived files (``sft.jsonl``, ``prm.jsonl``, ``mismatch.jsonl``, ``rejected.jsonl``, ``report.json``)
are rewritten from the log, in input order, at the end of every run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from research.annotate.client import ChatClient
from research.annotate.engine import AnnotateConfig, Annotator, record_id
from research.annotate.problems import AnnotateProblem

log = logging.getLogger(__name__)
LOG_NAME = "annotations.jsonl"
RUN_NAME = "run.json"


class ResumeMismatch(ValueError):
    """The output folder holds a run with another configuration."""


def read_log(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The complete records of a log; with ``repair``, a trailing partial line (a kill mid-write) is cut off."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record["id"] not in seen:  # a duplicate can only come from two runs writing at once; keep the first
            seen.add(record["id"])
            records.append(record)
    return records


@dataclass
class Summary:
    problems: int = 0
    resumed: int = 0
    """Problems already in the log when the run started."""
    annotated: int = 0
    """Problems annotated by this run."""
    status: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    unusable_replies: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    def as_dict(self, client: ChatClient) -> dict[str, Any]:
        stats = client.stats
        return {
            "problems": self.problems,
            "resumed": self.resumed,
            "annotated_this_run": self.annotated,
            "accepted": self.status.get("accepted", 0),
            "mismatch": self.status.get("mismatch", 0),
            "rejected": self.status.get("rejected", 0),
            "rejections_by_reason": dict(self.reasons.most_common()),
            "unusable_replies_by_reason": dict(self.unusable_replies.most_common()),
            "calls": stats.calls,
            "http_attempts": stats.http_attempts,
            "retries": stats.retries,
            "http_by_status": dict(sorted(stats.by_status.items())),
            "structured_output": client.structured,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "wall_s": round(self.wall_s, 2),
            "problems_per_s": round(self.annotated / self.wall_s, 3) if self.wall_s > 0 else None,
        }


def check_run_file(out: Path, fingerprint: dict[str, Any]) -> None:
    path = out / RUN_NAME
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != fingerprint:
            diff = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
            raise ResumeMismatch(f"{out} holds a run with other settings ({', '.join(diff)}); use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fingerprint, indent=2) + "\n")


async def run_batch(
    problems: list[AnnotateProblem],
    out: Path,
    client: ChatClient,
    config: AnnotateConfig,
    *,
    concurrency: int = 8,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> Summary:
    """Annotate every problem not yet in ``out``'s log; returns the summary of the whole log."""
    loop = asyncio.get_running_loop()
    log_path = out / LOG_NAME
    done = {r["id"] for r in read_log(log_path, repair=True)}
    todo = [p for p in problems if record_id(p.id, config) not in done]
    summary = Summary(problems=len(problems), resumed=len(problems) - len(todo))
    annotator = Annotator(client, config)
    started = loop.time()
    bar = tqdm(total=len(problems), initial=summary.resumed, unit="problem", disable=not progress, smoothing=0.1)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pending: Iterator[AnnotateProblem] = iter(todo)

    def write(record: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
        summary.annotated += 1
        summary.status[record["status"]] += 1
        bar.update(1)
        bar.set_postfix(
            ok=summary.status["accepted"],
            rejected=summary.status["rejected"],
            tok=client.stats.prompt_tokens + client.stats.completion_tokens,
            retries=client.stats.retries,
            refresh=False,
        )
        if on_record is not None:
            on_record(record)

    async def worker() -> None:
        for problem in pending:  # the shared iterator hands each problem to exactly one worker
            try:
                record = await annotator.annotate(problem)
            except Exception as exc:  # an unreadable image, a bug: recorded, and the batch goes on
                log.exception("problem %s failed", problem.id)
                record = {**annotator.base_record(problem), "reason": f"error:{type(exc).__name__}"}
            write(record)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo) or 1)))))
    finally:
        os.close(fd)
        bar.close()
    summary.wall_s = loop.time() - started
    return summary


def tally(records: list[dict[str, Any]], summary: Summary) -> None:
    """Status, rejection reasons and unusable-reply reasons over the whole log (resumed records included)."""
    summary.status = Counter(r["status"] for r in records)
    summary.reasons = Counter(r["reason"] for r in records if r["status"] == "rejected")
    summary.unusable_replies = Counter(u["reason"] for r in records for u in r.get("unusable") or ())
