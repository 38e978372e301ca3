"""PRM records from the policy's own sampled steps, labelled by rollouts (Math-Shepherd "hard estimation").

For every problem the policy samples ``samples`` QuickThink paths. A path whose final answer is right is labelled
``+`` throughout. For a wrong path, each prefix (one step longer at a time) is completed ``rollouts`` times by the
same policy: the prefix's last step is ``+`` when at least one completion reaches the reference answer, and the
first step that no completion rescues is ``-`` together with every step after it (the engine's "first error"
convention). Prefixes of all problems at the same depth are completed in one batched pass.

    atomthink train rollout-labels --policy models/atomthink-tiny-policy --data data/train --out data/prm-rollouts
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from atomthink.prm_format import TINY_PRM
from research.data.records import read_jsonl
from research.training.common import setup
from research.training.evaluate import Policy, _correct, _final, _question, complete_paths


@dataclass
class RolloutLabelConfig:
    policy: str
    data: str
    out: str
    problems: int = 1500
    offset: int = 0
    """Skip the first ``offset`` problems of the directory."""
    samples: int = 4
    rollouts: int = 4
    temperature: float = 0.7
    """Sampling temperature of the labelled paths."""
    rollout_temperature: float | None = None
    """Temperature of the completions that label them (default: ``temperature``); a cooler one gives fewer
    correct prefixes labelled ``-`` because every completion slipped."""
    max_depth: int = 12
    seed: int = 0
    threads: int | None = None


def label_paths(
    policy: Policy,
    problems: list[dict[str, Any]],
    images: list[Image.Image],
    paths: list[tuple[int, list[str]]],
    rollouts: int,
    temperature: float,
    max_depth: int,
    progress: bool = True,
) -> tuple[list[list[str]], int]:
    """Per-step ``+``/``-`` labels of each ``(problem index, path)``; also returns how many rollouts were run."""
    labels: list[list[str]] = [[] for _ in paths]
    undecided: list[int] = []
    for k, (i, path) in enumerate(paths):
        if _correct(problems[i], _final(path)):
            labels[k] = ["+"] * len(path)
        else:
            undecided.append(k)
    depth = 0
    n_rollouts = 0
    bar = tqdm(desc="rollout labels", total=len(undecided), disable=not progress)

    def first_error_here(k: int) -> None:
        """The step at ``depth`` is the first one nothing rescues: it and every later step are ``-``."""
        labels[k] += ["-"] * (len(paths[k][1]) - len(labels[k]))
        bar.update(1)

    while undecided:
        depth += 1
        still: list[int] = []
        starts: list[tuple[int, list[str]]] = []
        asked: list[int] = []
        for k in undecided:
            i, path = paths[k]
            if depth >= len(path):  # the whole wrong path: its last step ends it wrongly
                first_error_here(k)
                continue
            asked.append(k)
            starts.extend((i, path[:depth]) for _ in range(rollouts))
        if starts:
            done = complete_paths(policy, problems, images, starts, temperature, max_depth)
            n_rollouts += len(starts)
            for a, k in enumerate(asked):
                i = paths[k][0]
                if any(_correct(problems[i], _final(d)) for d in done[a * rollouts : (a + 1) * rollouts]):
                    labels[k].append("+")
                    still.append(k)
                else:
                    first_error_here(k)
        undecided = still
    bar.close()
    return labels, n_rollouts


def write_rollout_labels(cfg: RolloutLabelConfig, progress: bool = True) -> dict[str, Any]:
    setup(cfg.seed, cfg.threads)  # seeds random, numpy and torch
    root = Path(cfg.data)
    problems = read_jsonl(root / "problems.jsonl")[cfg.offset : cfg.offset + cfg.problems]
    images = [Image.open(root / p["image"]).convert("RGB") for p in problems]
    policy = Policy(cfg.policy, batch_size=256)
    t0 = time.time()
    starts: list[tuple[int, list[str]]] = [(i, []) for i in range(len(problems)) for _ in range(cfg.samples)]
    sampled = complete_paths(policy, problems, images, starts, cfg.temperature, cfg.max_depth)
    unique: dict[tuple[int, tuple[str, ...]], list[str]] = {}
    for (i, _), path in zip(starts, sampled, strict=True):
        unique.setdefault((i, tuple(path)), path)
    # a path whose step text holds the PRM's step tag (high-temperature garbage) cannot be encoded step by step
    tag_text = TINY_PRM.step_tag.strip()
    paths = [(i, path) for (i, _), path in unique.items() if not any(tag_text in step for step in path)]
    labels, n_rollouts = label_paths(
        policy,
        problems,
        images,
        paths,
        cfg.rollouts,
        cfg.temperature if cfg.rollout_temperature is None else cfg.rollout_temperature,
        cfg.max_depth,
        progress,
    )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = TINY_PRM.step_tag
    counts = {"paths": len(paths), "correct_paths": 0, "steps": 0, "negative_steps": 0}
    with open(out / "prm.jsonl", "w") as f:
        for (i, path), lab in zip(paths, labels, strict=True):
            p = problems[i]
            f.write(
                json.dumps(
                    {
                        "id": p["id"],
                        "question": _question(p),
                        "process": tag.join(path) + tag,
                        "label": lab,
                        "corruption": "policy",
                    }
                )
                + "\n"
            )
            counts["correct_paths"] += int("-" not in lab)
            counts["steps"] += len(lab)
            counts["negative_steps"] += lab.count("-")
    n_right = sum(_correct(problems[i], _final(s)) for (i, _), s in zip(starts, sampled, strict=True))
    summary = {
        "config": asdict(cfg),
        **counts,
        "rollouts": n_rollouts,
        "sampled_accuracy": round(n_right / max(1, len(sampled)), 4),
        "seconds": round(time.time() - t0, 1),
    }
    (out / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
