"""The quality report and the append-only log reader of ``research.annotate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from research.annotate.batch import read_log
from research.annotate.report import quality_report, render_markdown


def record(rid: str, status: str, steps: list[str], reason: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "status": status,
        "reason": reason,
        "steps": [{"content": s, "next_action": "continue", "action": "continue"} for s in steps],
        "match": {"correct": status == "accepted", "method": "integer", "prediction": "7"} if steps else None,
        "unusable": extra.get("unusable", []),
        "usage": {"calls": len(steps) or 1, "prompt_tokens": 10, "completion_tokens": 5},
    }


def test_quality_report_counts_paths_capabilities_agreement_and_reasons() -> None:
    records = [
        record("a", "accepted", ["Bar A is 3.", "Bar B is 4.", "3 + 4 = 7", "To sum up, the final answer is: 7"]),
        record("b", "mismatch", ["Bar A is 3.", "3 + 5 = 8", "To sum up, the final answer is: 8"]),
        record("c", "rejected", [], "unusable:not_json", unusable=[{"reason": "not_json"}] * 3),
        record("d", "rejected", [], "http_500", unusable=[{"reason": "http_500"}]),
    ]
    report = quality_report(records)
    assert report["status"] == {"accepted": 1, "mismatch": 1, "rejected": 2}
    assert report["answer_agreement"] == 0.5 and report["yield"] == 0.25
    assert report["steps_per_path"] == {"paths": 2, "mean": 3.5, "median": 3.5, "min": 3, "max": 4,
                                        "histogram": {3: 1, 4: 1}}  # fmt: skip
    caps = {c["capability"]: c for c in report["capabilities"]}
    assert caps["conclusion"]["steps"] == 2 and caps["calculation"]["steps"] == 2
    assert caps["image_recognition"]["steps"] == 3 and caps["image_recognition"]["outcome_supervised"] == 0.5
    assert report["rejections_by_reason"] == {"unusable:not_json": 1, "http_500": 1}
    assert report["unusable_replies_by_reason"] == {"not_json": 3, "http_500": 1}
    assert report["usage"] == {"calls": 9, "prompt_tokens": 40, "completion_tokens": 20}
    text = render_markdown(report)
    assert "| Calculation | 2 | 28.6% | 2 | 50.0% |" in text and "| unusable:not_json | 1 |" in text


def test_the_log_reader_cuts_a_partial_last_line_and_skips_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "annotations.jsonl"
    lines = [json.dumps({"id": "a", "n": 1}), json.dumps({"id": "b"}), json.dumps({"id": "a", "n": 2})]
    log.write_text("\n".join(lines) + '\n{"id": "c", "trunc')
    assert [r["id"] for r in read_log(log)] == ["a", "b"]
    assert log.read_text().endswith("trunc"), "reading alone changes nothing"
    assert read_log(log, repair=True)[0] == {"id": "a", "n": 1}
    assert log.read_text() == "\n".join(lines) + "\n"
