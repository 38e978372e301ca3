"""PRM data for the text policy (``atomthink-tiny-text-policy``): the records a text PRM is trained on.

* ``write_text_engine_records``: the data engine's corrupted paths (misread, slip, wrong operation, skipped step,
  wrong operand; ``research.data.records.prm_records``) of **text-dominant** problems: the question states the
  figure's values (``research.data.text_dominant``), so unlike the multimodal set a misread value contradicts the
  question and can be checked.
* ``write_text_rollout_labels``: Math-Shepherd rollout labels of the text policy's own QuickThink paths, sampled on
  the vLLM engine (``VllmPolicy``, the backend the benchmarks run) with the benchmark's sampling (temperature,
  top_p, top_k). A path with the right answer is ``+`` throughout; for a wrong one each prefix is completed
  ``rollouts`` times and the first step no completion rescues is ``-`` with every step after it (the convention of
  ``research.training.rollouts``, which samples the multimodal policy with transformers).

Both write ``prm.jsonl`` in the PRM layout of ``atomthink train prm`` (``tiny`` step tag). Run the rollouts with
the vLLM environment::

    atomthink train text-engine-records --out data/text-prm --n 6000 --seed 2
    .venv-vllm/bin/python -m research.training.cli text-rollout-labels --policy models/atomthink-tiny-text-policy \\
        --out data/text-prm-rollouts --seed 3 --problems 1500 --temperature 1.6 --top-p 1.0 --top-k 0
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atomthink.prm_format import TINY_PRM
from atomthink.prompts import TINY
from atomthink.steps import extract_answer, is_final
from research.data.engine import Problem, make_problem
from research.data.records import corruption_draws
from research.data.text_dominant import text_question


def text_engine_records(p: Problem, rng: random.Random, negatives: int = 2) -> list[dict[str, Any]]:
    """The reference path (all ``+``) and up to ``negatives`` corrupted paths of ``p``, with the text-dominant
    question."""
    question = text_question(p)
    tag = TINY_PRM.step_tag
    steps = [s.text for s in p.steps]
    out = [{"id": p.id, "question": question, "process": tag.join(steps) + tag, "label": ["+"] * len(steps),
            "corruption": None}]  # fmt: skip
    draws = corruption_draws(p, rng)
    for _ in range(20):
        if len(out) > negatives:
            break
        kind, made = next(draws)
        if made is not None:
            bad, labels = made
            out.append({"id": p.id, "question": question, "process": tag.join(s.text for s in bad) + tag,
                        "label": labels, "corruption": kind})  # fmt: skip
    return out


def write_text_engine_records(out: str | Path, n: int, seed: int, negatives: int = 2) -> dict[str, Any]:
    """``prm.jsonl`` of problems ``0..n-1`` of stream ``seed`` (never the held-out seed 20261125)."""
    rng = random.Random(f"atomthink-text-prm/{seed}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"problems": n, "records": 0, "negative_records": 0}
    with open(folder / "prm.jsonl", "w") as f:
        for i in range(n):
            for record in text_engine_records(make_problem(seed, i), rng, negatives):
                f.write(json.dumps(record) + "\n")
                counts["records"] += 1
                counts["negative_records"] += "-" in record["label"]
    summary = {"seed": seed, "negatives": negatives, **counts}
    (folder / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class TextRolloutConfig:
    policy: str
    out: str
    seed: int = 3
    """Problem stream of the labelled problems (the held-out stream is 20261125)."""
    problems: int = 1500
    offset: int = 0
    samples: int = 4
    """QuickThink paths sampled per problem."""
    rollouts: int = 2
    """Completions per prefix of a wrong path."""
    temperature: float = 1.6
    top_p: float = 1.0
    top_k: int = 0
    """0: off."""
    rollout_temperature: float | None = None
    """Temperature of the labelling completions (default: ``temperature``)."""
    max_steps: int = 8
    cores: str = "1"
    """``VLLM_CPU_OMP_THREADS_BIND`` of the engine (one core by default)."""


def right_answer(p: Problem, path: Sequence[str]) -> bool:
    """The path ends with a final step stating the problem's value (as ``benchmarks/peers.py`` scores it)."""
    return bool(path) and is_final(path[-1]) and extract_answer(path[-1]) == str(p.value_answer)


class _Walker:
    """QuickThink walks on a ``VllmPolicy``: one sampled step per call until a final step or ``max_steps``."""

    def __init__(self, policy: Any, cfg: TextRolloutConfig) -> None:
        self.policy, self.cfg = policy, cfg
        self.seeds = itertools.count(cfg.seed * 10_000_000 + cfg.offset * 1000 + 1)
        self.tokens = 0

    async def walk(self, question: str, prefix: Sequence[str], temperature: float) -> list[str]:
        from atomthink.protocol import SamplingParams
        from workers.backends.base import GenerationRequest

        steps = list(prefix)
        while len(steps) < self.cfg.max_steps and not (steps and is_final(steps[-1])):
            sampling = SamplingParams(n=1, temperature=temperature, top_p=self.cfg.top_p, top_k=self.cfg.top_k,
                                      max_new_tokens=TINY.step_max_tokens, seed=next(self.seeds))  # fmt: skip
            [candidate] = await self.policy.agenerate(GenerationRequest("step", question, steps, None, sampling))
            self.tokens += candidate.num_tokens
            steps.append(candidate.text)
        return steps


async def _label(cfg: TextRolloutConfig, policy: Any, progress: bool) -> dict[str, Any]:
    walker = _Walker(policy, cfg)
    problems = [make_problem(cfg.seed, cfg.offset + i) for i in range(cfg.problems)]
    questions = [text_question(p) for p in problems]
    t0 = time.time()
    sampled = await asyncio.gather(
        *(walker.walk(questions[i], [], cfg.temperature) for i in range(len(problems)) for _ in range(cfg.samples))
    )
    owners = [i for i in range(len(problems)) for _ in range(cfg.samples)]
    n_right = sum(right_answer(problems[i], path) for i, path in zip(owners, sampled, strict=True))
    if progress:
        print(f"sampled {len(sampled)} paths in {time.time() - t0:.0f} s, {n_right} right", flush=True)
    unique: dict[tuple[int, tuple[str, ...]], list[str]] = {}
    tag_text = TINY_PRM.step_tag.strip()
    for i, path in zip(owners, sampled, strict=True):
        if path and not any(tag_text in step for step in path):  # a step holding the tag cannot be encoded
            unique.setdefault((i, tuple(path)), path)
    paths = [(i, path) for (i, _), path in unique.items()]
    labels: list[list[str]] = [["+"] * len(path) if right_answer(problems[i], path) else [] for i, path in paths]
    rollout_t = cfg.temperature if cfg.rollout_temperature is None else cfg.rollout_temperature
    undecided = [k for k, lab in enumerate(labels) if not lab]
    n_rollouts = 0
    depth = 0
    while undecided:
        depth += 1
        asked = [k for k in undecided if depth < len(paths[k][1])]
        for k in set(undecided) - set(asked):  # the whole wrong path: its last step ends it wrongly
            labels[k] += ["-"] * (len(paths[k][1]) - len(labels[k]))
        done = await asyncio.gather(
            *(walker.walk(questions[paths[k][0]], paths[k][1][:depth], rollout_t) for k in asked
              for _ in range(cfg.rollouts))
        )  # fmt: skip
        n_rollouts += len(done)
        undecided = []
        for a, k in enumerate(asked):
            p = problems[paths[k][0]]
            if any(right_answer(p, d) for d in done[a * cfg.rollouts : (a + 1) * cfg.rollouts]):
                labels[k].append("+")
                undecided.append(k)
            else:
                labels[k] += ["-"] * (len(paths[k][1]) - len(labels[k]))
        if progress:
            print(f"depth {depth}: {len(asked)} prefixes, {len(undecided)} still rescued", flush=True)
    tag = TINY_PRM.step_tag
    counts = {"paths": len(paths), "correct_paths": 0, "steps": 0, "negative_steps": 0}
    lines = []
    for (i, path), lab in zip(paths, labels, strict=True):
        lines.append(json.dumps({"id": problems[i].id, "question": questions[i], "process": tag.join(path) + tag,
                                 "label": lab, "corruption": "policy"}) + "\n")  # fmt: skip
        counts["correct_paths"] += "-" not in lab
        counts["steps"] += len(lab)
        counts["negative_steps"] += lab.count("-")
    summary = {
        "config": asdict(cfg),
        **counts,
        "sampled_paths": len(sampled),
        "sampled_accuracy": round(n_right / max(1, len(sampled)), 4),
        "rollouts": n_rollouts,
        "policy_tokens": walker.tokens,
        "seconds": round(time.time() - t0, 1),
    }
    _write(Path(cfg.out), "".join(lines), summary)
    return summary


def _write(out: Path, records: str, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "prm.jsonl").write_text(records)
    (out / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")


def write_text_rollout_labels(cfg: TextRolloutConfig, progress: bool = True) -> dict[str, Any]:
    """Sample, label and write the text policy's paths (needs the vLLM environment)."""
    from atomthink.settings import Settings
    from workers.backends.vllm_policy import VllmPolicy

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cores
    settings = Settings(policy_backend="vllm", policy_model=cfg.policy, dtype="float32", vllm_max_model_len=1024,
                        vllm_enforce_eager=True, vllm_enable_chunked_prefill=False)  # fmt: skip
    policy = VllmPolicy.from_settings(settings)
    try:
        return asyncio.run(_label(cfg, policy, progress))
    finally:
        policy.close()
