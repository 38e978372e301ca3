"""The data engine: deterministic per seed, and every record's answer checks out by recomputation."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest

from atomthink.prm_format import TINY_PRM
from atomthink.prompts import TINY, format_question
from atomthink.steps import extract_answer, is_final
from research.data import CAPABILITIES, FAMILIES, corrupt, make_problem, recompute_answer
from research.data.cli import main as data_main
from research.data.engine import READ_ALL_QUESTION, arithmetic_facts, arithmetic_is_right
from research.data.records import read_jsonl, split_process

N = 60


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "a"
    assert data_main(["--out", str(out), "--n", str(N), "--seed", "5", "--quiet"]) == 0
    return out


def test_deterministic_per_seed(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    data_main(["--out", str(again), "--n", str(N), "--seed", "5", "--quiet"])
    assert _digest(dataset) == _digest(again)
    other = tmp_path / "c"
    data_main(["--out", str(other), "--n", str(N), "--seed", "6", "--quiet"])
    assert (dataset / "problems.jsonl").read_text() != (other / "problems.jsonl").read_text()


def test_problems_recompute(dataset: Path) -> None:
    problems = read_jsonl(dataset / "problems.jsonl")
    assert len(problems) == N
    assert {p["family"] for p in problems} == set(FAMILIES)
    for p in problems:
        assert (dataset / p["image"]).is_file()
        value = recompute_answer(p["family"], p["qtype"], p["question"], p["values"])
        expected = chr(ord("A") + p["choices"].index(str(value))) if p["choices"] else str(value)
        assert p["answer"] == expected
        steps = p["steps"]
        assert 3 <= len(steps) <= 8
        assert all(s["capability"] in CAPABILITIES for s in steps)
        assert is_final(steps[-1]["text"]) and not any(is_final(s["text"]) for s in steps[:-1])
        assert extract_answer(steps[-1]["text"], p["choices"]) == p["answer"]
        # every calculation step is arithmetically right
        for s in steps:
            if s["capability"] == "calculation":
                assert arithmetic_is_right(s["text"]) is True, s["text"]
        # every value read from the image is drawn in the image's glyph cells
        digits = sorted(ch for ch in p["cells"] if ch.isdigit())
        read = [int(m) for s in steps if s["capability"] == "image_recognition" for m in re.findall(r"\d+", s["text"])]
        assert all(str(v) in digits for v in read)
        assert sorted(str(v) for v in p["values"].values()) == digits


def test_sft_records(dataset: Path) -> None:
    problems = {p["id"]: p for p in read_jsonl(dataset / "problems.jsonl")}
    records = read_jsonl(dataset / "sft.jsonl")
    kinds = {r["kind"] for r in records}
    assert kinds == {"step", "direct", "cot", "read"}
    for r in records:
        p = problems[r["id"]]
        question = format_question(p["question"], p["choices"])
        human, gpt = (c["value"] for c in r["conversations"])
        assert [c["from"] for c in r["conversations"]] == ["human", "gpt"]
        assert r["image"] == p["image"]
        texts = [s["text"] for s in p["steps"]]
        if r["kind"] == "read":
            assert human == TINY.render("cot", READ_ALL_QUESTION) and r["answer"] is None
            reads = gpt.split("\n")
            assert sorted(
                int(x) for line in reads for x in re.findall(r"= (\d)|is (\d)|costs (\d)", line)[0] if x
            ) == sorted(p["values"].values())
            continue
        assert r["answer"] == p["answer"]
        if r["kind"] == "step":
            k = r["step_index"]
            assert human == TINY.render("step", question, texts[:k])
            assert gpt == texts[k] and r["capability"] == p["steps"][k]["capability"]
            assert r["final"] == (k == len(texts) - 1)
        elif r["kind"] == "direct":
            assert human == TINY.render("direct", question)
            assert extract_answer(gpt, p["choices"]) == p["answer"]
        else:
            assert human == TINY.render("cot", question)
            assert extract_answer(gpt.splitlines()[-1], p["choices"]) == p["answer"]


def test_prm_records(dataset: Path) -> None:
    problems = {p["id"]: p for p in read_jsonl(dataset / "problems.jsonl")}
    records = read_jsonl(dataset / "prm.jsonl")
    seen = set()
    for r in records:
        p = problems[r["id"]]
        steps = split_process(r["process"])
        assert len(steps) == len(r["label"]) and r["process"].endswith(TINY_PRM.step_tag)
        assert set(r["label"]) <= {"+", "-"}
        final = extract_answer(steps[-1], p["choices"])
        if r["corruption"] is None:
            assert r["label"] == ["+"] * len(steps) and final == p["answer"]
        else:
            seen.add(r["corruption"])
            first = r["label"].index("-")
            assert r["label"][first:] == ["-"] * (len(steps) - first)
            assert final != p["answer"]
    assert seen == {"misread", "slip", "wrong_op", "skip", "operand"}


def test_corruptions_label_first_wrong_step() -> None:
    rng = random.Random(0)
    for i in range(40):
        p = make_problem(11, i)
        true = [s.text for s in p.steps]
        for kind in ("misread", "slip", "wrong_op", "skip", "operand"):
            out = corrupt(p, kind, rng)
            if out is None:
                continue
            steps, labels = out
            first = labels.index("-")
            if kind == "slip":  # the first wrong step is the slipped calculation
                assert arithmetic_is_right(steps[first].text) is False, steps[first].text
            # every step before the first "-" is a step of the reference solution (a skip drops one)
            assert all(s.text in true for s in steps[:first])
            if kind != "skip":
                assert [s.text for s in steps[:first]] == true[:first]


def test_calculation_drill_covers_every_calculation_step() -> None:
    facts = {f"{a} {op} {b} = {r}" for a, op, b, r in arithmetic_facts()}
    calc = re.compile(r"(\d+) ([+\-×]) (\d+) = (\d+)$")
    seen = 0
    for i in range(3000):
        for step in make_problem(11, i).steps:
            if step.capability == "calculation":
                m = calc.search(step.text)
                assert m, step.text
                assert m.group(0) in facts, step.text
                seen += 1
    assert seen > 3000


def test_demo_errors_follow_one_consistent_wrong_path(tmp_path: Path) -> None:
    """With --demo-errors the step records of that share of problems walk one corrupted path to a wrong answer;
    the problems and PRM records of the seed stay as they were."""
    noisy = tmp_path / "noisy"
    clean = tmp_path / "clean"
    data_main(["--out", str(noisy), "--n", "200", "--seed", "5", "--demo-errors", "0.4", "--quiet"])
    data_main(["--out", str(clean), "--n", "200", "--seed", "5", "--quiet"])
    for name in ("problems.jsonl", "prm.jsonl"):
        assert (noisy / name).read_text() == (clean / name).read_text()
    problems = {p["id"]: p for p in read_jsonl(noisy / "problems.jsonl")}
    paths: dict[str, list[dict]] = {}
    for r in read_jsonl(noisy / "sft.jsonl"):
        if r["kind"] == "step":
            paths.setdefault(r["id"], []).append(r)
        elif r["kind"] != "read":  # direct and CoT records always teach the right answer
            assert r["answer"] == problems[r["id"]]["answer"]
    wrong = {pid for pid, recs in paths.items() if recs[0]["corruption"] is not None}
    assert 0.25 < len(wrong) / len(paths) < 0.45, len(wrong)
    assert {paths[pid][0]["corruption"] for pid in wrong} == {"misread", "slip", "wrong_op", "skip", "operand"}
    for pid, recs in paths.items():
        p = problems[pid]
        question = format_question(p["question"], p["choices"])
        texts = [r["conversations"][1]["value"] for r in recs]
        assert [r["step_index"] for r in recs] == list(range(len(recs)))
        assert len({r["corruption"] for r in recs}) == 1
        for k, r in enumerate(recs):  # each state is the question plus the path's own earlier steps
            assert r["conversations"][0]["value"] == TINY.render("step", question, texts[:k])
        assert is_final(texts[-1]) and not any(is_final(t) for t in texts[:-1])
        right = extract_answer(texts[-1], p["choices"]) == p["answer"]
        assert right == (pid not in wrong)
        assert (texts == [s["text"] for s in p["steps"]]) == (pid not in wrong)


def test_demo_errors_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="demo_errors"):
        data_main(["--out", str(tmp_path / "x"), "--n", "2", "--demo-errors", "1.0", "--quiet"])
