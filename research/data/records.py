"""Records the data engine writes: AMATH-SFT (sharegpt), AMATH-PRM and evaluation problems.

Layout of an output directory::

    images/<id>.png      the rendered problems (96x96 RGB)
    problems.jsonl       evaluation problems {"id","image","question","choices","answer","steps":[{text,capability}]}
                         plus "family","qtype","values","cells" (image paths are relative to the JSONL's folder)
    sft.jsonl            sharegpt records {"image","conversations":[human, gpt],"answer","kind",...}
    prm.jsonl            {"question","process","label","corruption","id"}

With ``demo_errors`` > 0 the Markov step records of that share of problems follow one corrupted path (a misread, slip,
wrong operation, skipped step or wrong operand, continued consistently to a wrong conclusion) instead of the
reference solution: the policy then learns an imperfect demonstrator's step distribution, so its sampled error rate
is a trained quantity (see the policy card) rather than the untrained tail of a near-perfect model heated up.

SFT ``human`` values are the exact TINY prompt text (``TINY.render(kind, format_question(q, choices), steps)``);
the image goes in front of it through the chat template, as at inference. ``gpt`` values are the action text
without delimiters: training appends ``TINY.step_delimiter`` to non-final steps and EOS to final steps, direct
answers and whole CoTs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from atomthink.prm_format import TINY_PRM
from atomthink.prompts import TINY, format_question
from atomthink.steps import is_final
from research.data.engine import (
    CORRUPTIONS,
    READ_ALL_QUESTION,
    Problem,
    Step,
    corrupt,
    make_problem,
    reading_steps,
)

CORRUPTION_WEIGHTS = {"misread": 0.12, "slip": 0.28, "wrong_op": 0.2, "skip": 0.2, "operand": 0.2}


def problem_record(p: Problem, image_path: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "image": image_path,
        "question": p.question,
        "choices": p.choices,
        "answer": p.answer,
        "steps": [{"text": s.text, "capability": s.capability} for s in p.steps],
        "family": p.family,
        "qtype": p.qtype,
        "values": p.values,
        "cells": p.cells,
        "roles": p.roles,
    }


def _conv(human: str, gpt: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def corruption_draws(p: Problem, rng: random.Random) -> Iterator[tuple[str, tuple[list[Step], list[str]] | None]]:
    """Endless draws of a corruption kind (by ``CORRUPTION_WEIGHTS``) and its wrong path, ``None`` where ``p`` has no
    such fault."""
    kinds = list(CORRUPTION_WEIGHTS)
    weights = [CORRUPTION_WEIGHTS[k] for k in kinds]
    while True:
        kind = rng.choices(kinds, weights)[0]
        yield kind, corrupt(p, kind, rng)


def demonstration(p: Problem, error_rate: float, rng: random.Random) -> tuple[list[Step], str | None]:
    """The path the Markov records of ``p`` teach: with probability ``error_rate`` a corrupted one (and its kind),
    otherwise the reference solution."""
    if error_rate > 0 and rng.random() < error_rate:
        for kind, out in islice(corruption_draws(p, rng), 20):
            if out is not None:
                return out[0], kind
    return p.steps, None


def sft_records(
    p: Problem,
    image_path: str,
    rng: random.Random | None = None,
    path: list[Step] | None = None,
    corruption: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Markov step records along ``path`` (the reference solution by default, or a corrupted path of kind
    ``corruption``), one direct and one CoT record, and one dense reading record (kind ``read``: the cot prompt with
    the question "Read every value in the image." answered by one reading step per drawn value). Direct, CoT and
    reading records are always right."""
    question = format_question(p.question, p.choices)
    walk = path or p.steps
    texts = [s.text for s in walk]
    base = {"image": image_path, "answer": p.answer, "id": p.id, "family": p.family}
    for k, step in enumerate(walk):
        yield {
            **base,
            "kind": "step",
            "step_index": k,
            "capability": step.capability,
            "final": is_final(step.text),
            "corruption": corruption,
            "conversations": _conv(TINY.render("step", question, texts[:k]), step.text),
        }
    reference = [s.text for s in p.steps]
    yield {
        **base,
        "kind": "direct",
        "capability": "conclusion",
        "final": True,
        "conversations": _conv(TINY.render("direct", question), str(p.value_answer)),
    }
    yield {
        **base,
        "kind": "cot",
        "capability": "conclusion",
        "final": True,
        "conversations": _conv(TINY.render("cot", question), TINY.history_joiner.join(reference)),
    }
    reads = reading_steps(p, rng or random.Random(p.id))
    yield {
        **base,
        "answer": None,
        "kind": "read",
        "capability": "image_recognition",
        "final": True,
        "conversations": _conv(TINY.render("cot", READ_ALL_QUESTION), TINY.history_joiner.join(reads)),
    }


def prm_records(p: Problem, rng: random.Random, negatives: int = 2) -> Iterator[dict[str, Any]]:
    question = format_question(p.question, p.choices)
    tag = TINY_PRM.step_tag
    steps = [s.text for s in p.steps]
    yield {
        "id": p.id,
        "question": question,
        "process": tag.join(steps) + tag,
        "label": ["+"] * len(steps),
        "corruption": None,
    }
    draws = corruption_draws(p, rng)
    made = 0
    for _ in range(20):
        if made >= negatives:
            break
        kind, out = next(draws)
        if out is None:
            continue
        bad, labels = out
        texts = [s.text for s in bad]
        yield {"id": p.id, "question": question, "process": tag.join(texts) + tag, "label": labels, "corruption": kind}
        made += 1


def through_first_error(labels: list[str]) -> int:
    """How many steps lead up to and include the first ``-`` label (all of them when none is ``-``)."""
    return labels.index("-") + 1 if "-" in labels else len(labels)


def split_process(process: str) -> list[str]:
    """The steps of a PRM record's ``process`` (inverse of joining with the step tag)."""
    parts = process.split(TINY_PRM.step_tag)
    if parts and parts[-1] == "":
        parts = parts[:-1]
    return parts


def write_dataset(
    out: str | Path, n: int, seed: int, prm_negatives: int = 2, demo_errors: float = 0.0, progress: bool = True
) -> dict[str, int]:
    """Generate ``n`` problems of stream ``seed`` into ``out``; returns record counts. ``demo_errors``: the share of
    problems whose Markov step records follow a corrupted path (its own RNG stream, so the problems, images and PRM
    records of a seed do not depend on it)."""
    if not 0.0 <= demo_errors < 1.0:
        raise ValueError(f"demo_errors must be in [0, 1), got {demo_errors}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"atomthink-prm/{seed}")
    demo_rng = random.Random(f"atomthink-demo/{seed}")
    counts = {"problems": 0, "sft": 0, "prm": 0, "demo_errors": 0}
    with (
        open(out / "problems.jsonl", "w") as fp,
        open(out / "sft.jsonl", "w") as fs,
        open(out / "prm.jsonl", "w") as fr,
    ):
        for i in tqdm(range(n), desc=f"data seed={seed}", disable=not progress):
            p = make_problem(seed, i)
            rel = f"images/{p.id}.png"
            p.draw().save(out / rel, optimize=False)
            fp.write(json.dumps(problem_record(p, rel)) + "\n")
            counts["problems"] += 1
            path, corruption = demonstration(p, demo_errors, demo_rng)
            counts["demo_errors"] += corruption is not None
            for rec in sft_records(p, rel, path=path, corruption=corruption):
                fs.write(json.dumps(rec) + "\n")
                counts["sft"] += 1
            for rec in prm_records(p, rng, prm_negatives):
                fr.write(json.dumps(rec) + "\n")
                counts["prm"] += 1
    (out / "meta.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "n": n,
                "corruptions": list(CORRUPTIONS),
                "corruption_weights": CORRUPTION_WEIGHTS,
                "demo_error_rate": demo_errors,
                **counts,
            },
            indent=2,
        )
        + "\n"
    )
    return counts


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
