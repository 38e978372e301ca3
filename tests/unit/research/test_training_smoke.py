"""Training smoke test: a few steps on a tiny set; the loss falls and the checkpoints load as standard HF models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from atomthink.prm_format import TINY_PRM, encode_path, label_token_ids
from atomthink.prompts import TINY, chat_messages, format_question
from research.data.records import read_jsonl, write_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "data"
    write_dataset(out, n=24, seed=3, progress=False)
    return out


def _losses(log: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [r[key] for r in rows if r.get(key) is not None]


def test_policy_smoke(tiny_data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from research.training.policy import PolicyTrainConfig, build_example, train_policy

    out = tmp_path / "policy"
    cfg = PolicyTrainConfig(
        data=[str(tiny_data)],
        out=str(out),
        steps=40,
        perception_steps=10,
        read_steps=10,
        warmup=5,
        batch_size=16,
        log_every=1,
        text_layers=1,
        vision_layers=1,
        max_minutes=4,  # a safety cap: the step count decides (a shared machine must not cut it short)
        threads=2,
    )
    summary = train_policy(cfg, progress=False)
    sft = _losses(out / "train_log.jsonl", "sft_loss")
    assert sum(sft[-5:]) / 5 < 0.7 * sum(sft[:3]) / 3, sft
    assert summary["size_mb"] < 25

    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    p = read_jsonl(tiny_data / "problems.jsonl")[0]
    prompt = TINY.render("step", format_question(p["question"], p["choices"]))
    text = processor.apply_chat_template(chat_messages(prompt, True), add_generation_prompt=True, tokenize=False)
    image = Image.open(tiny_data / p["image"]).convert("RGB")
    enc = processor(images=[image], text=[text], padding_side="left", return_tensors="pt")
    ids, plen = build_example(processor, prompt, p["steps"][0]["text"] + "\n")
    assert enc["input_ids"][0].tolist() == ids[:plen]  # training prefix == serving prompt
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > enc["input_ids"].shape[1]


def test_prm_smoke(tiny_data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from research.training.prm import PrmTrainConfig, train_prm

    out = tmp_path / "prm"
    cfg = PrmTrainConfig(
        data=[str(tiny_data)],
        out=str(out),
        steps=40,
        warmup=5,
        batch_size=16,
        log_every=1,
        layers=1,
        max_minutes=4,  # a safety cap: the step count decides (a shared machine must not cut it short)
        threads=2,
        verify_batch=8,
    )
    summary = train_prm(cfg, progress=False)
    losses = _losses(out / "train_log.jsonl", "loss")
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3, losses
    verify = _losses(out / "train_log.jsonl", "verify_loss")
    assert sum(verify[-5:]) / 5 < 0.5 * sum(verify[:3]) / 3, verify
    assert summary["size_mb"] < 25

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    plus, minus = label_token_ids(tokenizer, TINY_PRM)
    ids, pos = encode_path(tokenizer, TINY_PRM, "What is 2 + 3?", ["2 + 3 = 5", "To sum up, the final answer is: 5"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    scores = logits[pos][:, [plus, minus]].softmax(-1)[:, 0]
    assert scores.shape == (2,) and torch.all((scores >= 0) & (scores <= 1))


def test_prm_starts_from_the_policy_language_model(tmp_path: Path) -> None:
    """``prm_from_policy`` keeps the policy's decoder and tied head: on text the two give the same logits, and the
    PRM trains from there with the PRM's loss."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from research.modeling.tiny import TinyPolicyShape, build_tiny_policy, prm_from_policy

    policy_dir = build_tiny_policy(tmp_path / "policy", TinyPolicyShape(text_layers=1, vision_layers=1), seed=1)
    prm_dir = prm_from_policy(policy_dir, tmp_path / "prm")
    policy = AutoModelForImageTextToText.from_pretrained(policy_dir).eval()
    prm = AutoModelForCausalLM.from_pretrained(prm_dir).eval()
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    with torch.no_grad():
        assert torch.equal(policy(input_ids=ids).logits, prm(input_ids=ids).logits)
    assert prm.lm_head.weight.data_ptr() == prm.model.embed_tokens.weight.data_ptr()
    with pytest.raises(ValueError, match="not a tiny LLaVA"):
        prm_from_policy(prm_dir, tmp_path / "again")  # a PRM is not a policy


def test_first_error_supervision_stops_at_the_first_wrong_step(tmp_path: Path) -> None:
    from research.modeling.tiny import char_tokenizer
    from research.training.prm import PrmData

    tag = TINY_PRM.step_tag
    steps = ["Bar A is 3.", "3 + 4 = 8", "8 + 1 = 9", "To sum up, the final answer is: 9"]
    record = {"id": "x", "question": "Q?", "process": tag.join(steps) + tag, "label": ["+", "-", "-", "-"]}
    (tmp_path / "prm.jsonl").write_text(json.dumps(record) + "\n")
    tokenizer = char_tokenizer()
    plus, minus = label_token_ids(tokenizer, TINY_PRM)
    [(ids_all, pos_all, targets_all, _)] = PrmData([str(tmp_path)], tokenizer).examples
    [(ids, pos, targets, _)] = PrmData([str(tmp_path)], tokenizer, supervise="first_error").examples
    assert targets_all == [plus, minus, minus, minus] and targets == [plus, minus]
    assert pos == pos_all[:2] and ids == ids_all[: pos[-1] + 1]
    with pytest.raises(ValueError, match="supervise"):
        PrmData([str(tmp_path)], tokenizer, supervise="some")


def test_local_supervision_marks_only_the_corrupted_step_of_an_engine_record(tmp_path: Path) -> None:
    from research.modeling.tiny import char_tokenizer
    from research.training.prm import PrmData

    tag = TINY_PRM.step_tag
    steps = ["Bar A is 3.", "3 + 4 = 8", "8 + 1 = 9", "To sum up, the final answer is: 9"]
    base = {"id": "x", "question": "Q?", "process": tag.join(steps) + tag, "label": ["+", "-", "-", "-"]}
    records = [{**base, "corruption": "slip"}, {**base, "corruption": None}]  # an engine record, a rollout record
    (tmp_path / "prm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = char_tokenizer()
    plus, minus = label_token_ids(tokenizer, TINY_PRM)
    (ids_all, pos_all, _, _), _ = PrmData([str(tmp_path)], tokenizer).examples
    engine, rollout = PrmData([str(tmp_path)], tokenizer, supervise="local").examples
    assert engine[2] == [plus, minus, plus, plus] and engine[1] == pos_all and engine[0] == ids_all
    assert rollout[2] == [plus, minus] and rollout[1] == pos_all[:2]  # no step knowledge: cut after the first "-"


def test_verify_drill_labels_each_line_by_its_arithmetic() -> None:
    import random

    from transformers import AutoTokenizer

    from atomthink.settings import DEFAULT_PRM_DIR
    from research.data.engine import arithmetic_is_right
    from research.training.drill import VerifyDrill

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_PRM_DIR)
    drill = VerifyDrill(tokenizer)
    rng = random.Random(0)
    wrong = total = 0
    for _ in range(200):
        ids, pos, targets = drill._example(rng)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        lines = [line.strip() for line in text.split(TINY_PRM.step_tag.strip())[:-1]]
        assert len(lines) == len(pos) == len(targets)
        for line, target in zip(lines, targets, strict=True):
            right = arithmetic_is_right(line)
            assert right is not None, line
            assert target == (drill.plus if right else drill.minus), line
            wrong += not right
            total += 1
    assert 0.4 < wrong / total < 0.6


def test_drills_stage_runs_before_the_prm_records(tiny_data: Path, tmp_path: Path) -> None:
    from research.training.prm import PrmTrainConfig, train_prm

    out = tmp_path / "prm"
    cfg = PrmTrainConfig(
        data=[str(tiny_data)], out=str(out), steps=3, warmup=2, batch_size=8, log_every=1, layers=1, threads=2,
        drill_batch=0, verify_pretrain_steps=25, max_minutes=4,  # a safety cap: the step count decides
    )  # fmt: skip
    summary = train_prm(cfg, progress=False)
    assert summary["verify_pretrain_steps_done"] == 25 and summary["steps_done"] == 3
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    stages = [r.get("stage", "prm") for r in rows]
    assert stages == ["drills"] * 25 + ["prm"] * 3
    drills = [r for r in rows if r.get("stage") == "drills"]
    # the drills run at 64 examples each even with drill_batch 0, and their loss falls from the untrained vocabulary
    assert all(r["drill_loss"] > 0 for r in drills)
    assert sum(r["verify_loss"] for r in drills[-3:]) < 0.5 * sum(r["verify_loss"] for r in drills[:3])
