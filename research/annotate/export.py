"""The official records from an annotation log: AMATH-SFT (Markov) and AMATH-PRM, in input order.

* ``sft.jsonl``: for every accepted path, one record per step: the human turn is the official AtomThink step prompt
  (``atomthink.prompts.ATOMTHINK_STEP_TEMPLATE``, after ``<image>\\n`` when the problem has an image, as the v1
  template starts) holding the question and the history (earlier actions joined by ``"\\n\\n"``, as the official
  SFT data joins them), the gpt turn is the current action ``"Step k: ..."``; plus ``id``, ``record_id``,
  ``step_index``, ``next_action``.
* ``prm.jsonl``: for every accepted path, ``{"question", "process", "label"}`` with every step followed by the PRM
  preset's step tag (``math-psa`` by default: ``" \\n\\n\\n\\n\\n"``) and ``+`` on every step (the path reaches the
  reference); plus ``id``, ``step_tag``. Negatives (corrupted steps, rollout labels) are not made here.
* ``mismatch.jsonl``: the annotation records of paths whose answer misses the reference, kept apart for rollout
  labelling or review; ``rejected.jsonl``: the rejected problems with their reasons.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atomthink.prm_format import get_prm_preset
from atomthink.prompts import ATOMTHINK_STEP_TEMPLATE, ATOMTHINK_V1

STEP_JOINER = "\n\n"


def action_text(k: int, content: str) -> str:
    return f"Step {k + 1}: {content}"


def sft_records(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    actions = [action_text(k, s["content"]) for k, s in enumerate(record["steps"])]
    prefix = ATOMTHINK_V1.image_prefix if record.get("image") else ""
    for k, action in enumerate(actions):
        human = prefix + ATOMTHINK_STEP_TEMPLATE.format(
            question=record["question"], history=STEP_JOINER.join(actions[:k])
        )
        yield {
            "id": f"{record['id']}-{k}",
            "record_id": record["id"],
            "problem_id": record["problem_id"],
            "image": record.get("image"),
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": action}],
            "answer": record["reference"],
            "step_index": k,
            "next_action": record["steps"][k]["next_action"],
        }


def prm_record(record: dict[str, Any], prm_preset: str = "math-psa") -> dict[str, Any]:
    preset = get_prm_preset(prm_preset)
    steps = [s["content"].strip() if preset.strip_steps else s["content"] for s in record["steps"]]
    return {
        "id": record["id"],
        "problem_id": record["problem_id"],
        "question": preset.prepare_question(record["question"]),
        "process": "".join(s + preset.step_tag for s in steps),
        "label": ["+"] * len(steps),
        "step_tag": preset.step_tag,
    }


def _write(path: Path, rows: Iterator[dict[str, Any]]) -> int:
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def export(records: list[dict[str, Any]], out: Path, order: list[str], prm_preset: str = "math-psa") -> dict[str, int]:
    """Write the derived files; ``order`` lists record ids in input order (records of other inputs go last)."""
    rank = {rid: i for i, rid in enumerate(order)}
    ordered = sorted(records, key=lambda r: (rank.get(r["id"], len(rank)), r["id"]))
    accepted = [r for r in ordered if r["status"] == "accepted"]
    return {
        "sft": _write(out / "sft.jsonl", (s for r in accepted for s in sft_records(r))),
        "prm": _write(out / "prm.jsonl", (prm_record(r, prm_preset) for r in accepted)),
        "mismatch": _write(out / "mismatch.jsonl", (r for r in ordered if r["status"] == "mismatch")),
        "rejected": _write(out / "rejected.jsonl", (r for r in ordered if r["status"] == "rejected")),
    }
