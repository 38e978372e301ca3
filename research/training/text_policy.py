"""SFT of a tiny text-only policy (``LlamaForCausalLM``) on the text-dominant synthetic set.

vLLM's CPU engine cannot load the tiny LLaVA policy (its LLaVA module imports torchvision, which does not import
against the CPU torch), so the real-engine tests and benchmarks need a policy it can load: this one reads the
figure's values from the question (``research.data.text_dominant``) and writes the same atomic steps as the
multimodal policy, with the same character tokenizer, chat template and ``tiny`` prompt preset. Problems are drawn
afresh for every batch (no images are drawn), and the calculation drill of the multimodal policy runs alongside.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

from atomthink.prompts import PRESET_FILE, TINY
from research.data.engine import Problem, make_problem
from research.data.text_dominant import text_question, text_sft_pairs
from research.modeling.tiny import _llama_config, char_tokenizer
from research.training.common import LossLog, dir_size_mb, lr_factor, next_token_loss, optimizer_step, setup
from research.training.drill import CalcDrill

HELDOUT_SEED = 20261125


@dataclass
class TextPolicyTrainConfig:
    out: str
    seed: int = 0
    data_seed: int = 1
    """Problem stream of the training problems (held-out evaluation uses ``HELDOUT_SEED``)."""
    steps: int = 3000
    max_minutes: float = 30.0
    """Wall-clock cap."""
    max_cpu_minutes: float | None = None
    """Cap on this process's CPU time (user + system, all threads), for machines whose cores are shared."""
    init_from: str | None = None
    """Continue from this text-policy checkpoint (a second stage with its own schedule)."""
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    drill_batch: int = 32
    drill_weight: float = 1.0
    hard_repeat: int = 2
    """Weight (in draws) of calculation and conclusion steps against the other records."""
    log_every: int = 25
    eval_problems: int = 200
    threads: int | None = None


def encode(tokenizer: Any, prompt: str, target: str) -> tuple[list[int], int]:
    """Token ids of the chat-templated prompt plus ``target`` (EOS appended unless it ends with the delimiter),
    and the prompt's length; the prompt is rendered exactly as the vLLM and transformers backends render it."""
    prompt_text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    ending = "" if target.endswith(TINY.step_delimiter or "\n") else tokenizer.eos_token
    p_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt_text + target + ending, add_special_tokens=False)["input_ids"]
    if ids[: len(p_ids)] != p_ids:
        raise ValueError("training sequence does not start with the inference prompt tokens")
    return ids, len(p_ids)


def _draws(p: Problem, hard_repeat: int) -> list[tuple[str, str]]:
    pairs = []
    for kind, prompt, target in text_sft_pairs(p):
        hard = kind == "step" and (re.search(r"=\s*-?\d+\s*$", target.strip()) or "final answer" in target)
        pairs += [(prompt, target)] * (hard_repeat if hard else 1)
    return pairs


def _batch(tokenizer: Any, cfg: TextPolicyTrainConfig, rng: random.Random) -> dict[str, torch.Tensor]:
    seqs: list[tuple[list[int], int]] = []
    while len(seqs) < cfg.batch_size:
        p = make_problem(cfg.data_seed, rng.randrange(10**9))
        prompt, target = rng.choice(_draws(p, cfg.hard_repeat))
        seqs.append(encode(tokenizer, prompt, target))
    width = max(len(ids) for ids, _ in seqs)
    ids_t = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (ids, plen) in enumerate(seqs):
        ids_t[r, : len(ids)] = torch.tensor(ids)
        labels[r, plen : len(ids)] = torch.tensor(ids[plen:])
        mask[r, : len(ids)] = 1
    return {"input_ids": ids_t, "labels": labels, "attention_mask": mask}


@torch.no_grad()
def cot_accuracy(model: Any, tokenizer: Any, problems: list[Problem], batch: int = 50) -> float:
    """Greedy chain-of-thought accuracy (the last number of the output against the reference value)."""
    model.eval()
    right = 0
    for i in range(0, len(problems), batch):
        chunk = problems[i : i + batch]
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": TINY.render("cot", text_question(p))}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for p in chunk
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=160, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        for p, row in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            numbers = re.findall(r"-?\d+", tokenizer.decode(row, skip_special_tokens=True))
            right += bool(numbers) and numbers[-1] == str(p.value_answer)
    model.train()
    return right / max(1, len(problems))


def train_text_policy(cfg: TextPolicyTrainConfig) -> dict[str, Any]:
    setup(cfg.seed, cfg.threads)
    rng = random.Random(f"text-policy/{cfg.seed}")
    tokenizer = char_tokenizer()
    if cfg.init_from:
        model = LlamaForCausalLM.from_pretrained(cfg.init_from, dtype=torch.float32)
    else:
        model = LlamaForCausalLM(_llama_config(tokenizer, cfg.hidden, cfg.layers, cfg.heads, 1024))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    drill = CalcDrill(tokenizer)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = LossLog(out / ("train_log_stage2.jsonl" if cfg.init_from else "train_log.jsonl"))
    start = time.time()
    cpu_start = time.process_time()
    step = 0
    for step in range(cfg.steps):
        if time.time() - start > cfg.max_minutes * 60:
            break
        if cfg.max_cpu_minutes is not None and time.process_time() - cpu_start > cfg.max_cpu_minutes * 60:
            break
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup)
        batch = _batch(tokenizer, cfg, rng)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sft = next_token_loss(logits, batch["labels"])
        dloss = drill.loss(model, cfg.drill_batch, rng)
        optimizer_step(opt, model, sft + cfg.drill_weight * dloss)
        if step % cfg.log_every == 0:
            log.write(step=step, sft_loss=round(sft.item(), 4), drill_loss=round(dloss.item(), 4),
                      cpu_s=round(time.process_time() - cpu_start, 1))  # fmt: skip
            print(f"step {step} sft {sft.item():.3f} drill {dloss.item():.3f} {time.time() - start:.0f}s", flush=True)
    minutes = (time.time() - start) / 60
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / PRESET_FILE).write_text(json.dumps({"prompt_preset": "tiny"}, indent=2) + "\n")
    heldout = [make_problem(HELDOUT_SEED, i) for i in range(cfg.eval_problems)]
    summary = {
        "config": asdict(cfg),
        "steps_done": step + 1,
        "minutes": round(minutes, 1),
        "cpu_minutes": round((time.process_time() - cpu_start) / 60, 1),
        "heldout_cot_greedy_accuracy": round(cot_accuracy(model, tokenizer, heldout), 4),
        "heldout_problems": f"seed {HELDOUT_SEED}, 0..{cfg.eval_problems - 1} (text-dominant)",
        "size_mb": round(dir_size_mb(out), 2),
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m research.training.text_policy", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--max-minutes", type=float, default=30.0)
    p.add_argument("--max-cpu-minutes", type=float, default=None)
    p.add_argument("--init-from", default=None)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-problems", type=int, default=200)
    a = p.parse_args(argv)
    cfg = TextPolicyTrainConfig(
        out=a.out,
        steps=a.steps,
        max_minutes=a.max_minutes,
        max_cpu_minutes=a.max_cpu_minutes,
        init_from=a.init_from,
        warmup=a.warmup,
        layers=a.layers,
        hidden=a.hidden,
        lr=a.lr,
        seed=a.seed,
        eval_problems=a.eval_problems,
    )
    print(json.dumps(train_text_policy(cfg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
