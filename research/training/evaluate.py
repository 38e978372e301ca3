"""What only the evaluator measures of the tiny models, with plain ``transformers``, beside the service's own runs.

* reading accuracy: greedy next step after the gold prefix, on every ``image_recognition`` step;
* direct / CoT accuracy (greedy whole answers);
* PRM step-level AUROC on labelled held-out PRM records (overall, on the steps up to and including each record's
  first ``-``, per corruption kind, and within calculation steps: right against wrong arithmetic, where step type
  cannot stand in for correctness);
* ``beam`` (width 2, 3 candidates, ``last``) and ``service_quick`` (QuickThink): the service's registered strategies,
  embedded in this process on the same checkpoints, one solve per problem (seed ``--seed`` + index), at the sampling
  the run states (``--temperature``, ``--top-p``, ``--top-k``).

Best-of-N, the votes and adaptive compute are measured by ``atomthink eval`` (the service's strategies, with their
sampling stated). The policy is called as the serving contract says: the TINY prompt through the processor's chat
template, ``padding_side="left"``, generation stopped at the step delimiter or EOS.

    python -m research.training.evaluate --policy models/atomthink-tiny-policy --prm models/atomthink-tiny-prm \
        --data data/heldout --n 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from atomthink.prm_format import TINY_PRM, encode_path, label_token_ids
from atomthink.prompts import TINY, TINY_STEP_DELIMITER, chat_messages, format_question
from atomthink.settings import Settings
from atomthink.steps import extract_answer, invalid_reason, is_final
from research.data.engine import arithmetic_is_right
from research.data.records import read_jsonl, split_process, through_first_error
from service.schemas import SolveParams, SolveResponse


class Policy:
    def __init__(self, path: str | Path, batch_size: int = 64) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path).eval()
        tok = self.processor.tokenizer
        self.eos_ids = [tok.eos_token_id, tok.convert_tokens_to_ids(TINY_STEP_DELIMITER)]
        self.pad_id = tok.pad_token_id
        self.batch_size = batch_size
        self.calls = 0
        self.generated_tokens = 0

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        temperature: float,
        max_new_tokens: int = 48,
        stop_at_step: bool = True,
    ) -> list[str]:
        """Continuations: sampled (``top_k=0, top_p=1.0``) above temperature 0, greedy at 0."""
        out: list[str] = []
        tok = self.processor.tokenizer
        for i in range(0, len(prompts), self.batch_size):
            texts = [
                self.processor.apply_chat_template(chat_messages(p, True), add_generation_prompt=True, tokenize=False)
                for p in prompts[i : i + self.batch_size]
            ]
            enc = self.processor(
                images=list(images[i : i + self.batch_size]),
                text=texts,
                padding_side="left",
                padding=True,
                return_tensors="pt",
            )
            kwargs: dict[str, Any] = {
                "do_sample": temperature > 0,
                "max_new_tokens": max_new_tokens,
                "pad_token_id": self.pad_id,
                "eos_token_id": self.eos_ids if stop_at_step else self.eos_ids[:1],
            }
            if temperature > 0:
                kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
            gen = self.model.generate(**enc, **kwargs)
            new = gen[:, enc["input_ids"].shape[1] :]
            self.calls += len(texts)
            for row in new:
                ids = [t for t in row.tolist() if t != self.pad_id]
                self.generated_tokens += len(ids)
                text = tok.decode(ids, skip_special_tokens=True)
                out.append(text.split(TINY_STEP_DELIMITER)[0].strip() if stop_at_step else text.strip())
        return out


class Prm:
    def __init__(self, path: str | Path, batch_size: int = 128) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.plus, self.minus = label_token_ids(self.tokenizer, TINY_PRM)
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """P(+) of every step of every (question, steps) path."""
        out: list[list[float]] = []
        pad = self.tokenizer.pad_token_id
        for i in range(0, len(items), self.batch_size):
            enc = [encode_path(self.tokenizer, TINY_PRM, q, s) for q, s in items[i : i + self.batch_size]]
            width = max(len(ids) for ids, _ in enc)
            ids_t = torch.full((len(enc), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids_t)
            for r, (ids, _) in enumerate(enc):
                ids_t[r, : len(ids)] = torch.tensor(ids)
                mask[r, : len(ids)] = 1
            logits = self.model(input_ids=ids_t, attention_mask=mask).logits
            pair = torch.stack([logits[..., self.plus], logits[..., self.minus]], -1).softmax(-1)[..., 0]
            for r, (_, pos) in enumerate(enc):
                out.append(pair[r, pos].tolist())
        return out


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (labels 1 = positive), ties counted half."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    rank_of = np.empty(len(allv))
    rank_of[order] = ranks
    r_pos = rank_of[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def arithmetic_auroc(paths: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> float:
    """AUROC within one step type: calculation steps, right against wrong arithmetic (recomputed from the text)."""
    calc_s, calc_y = [], []
    for steps, sc in zip(paths, scores, strict=True):
        for step, s in zip(steps, sc, strict=True):
            if (right := arithmetic_is_right(step)) is not None:
                calc_s.append(s)
                calc_y.append(int(right))
    return auroc(calc_s, calc_y)


def prm_auroc(prm: Prm, records: list[dict[str, Any]]) -> dict[str, float]:
    items = [(r["question"], split_process(r["process"])) for r in records]
    scores = prm.score(items)
    flat_s, flat_y, kinds = [], [], []
    for r, sc in zip(records, scores, strict=True):
        for s, lab in zip(sc, r["label"], strict=True):
            flat_s.append(s)
            flat_y.append(1 if lab == "+" else 0)
            kinds.append(r["corruption"] or "clean")
    result = {"all": auroc(flat_s, flat_y), "steps": len(flat_s), "negatives": flat_y.count(0)}
    # the steps a first-error PRM is trained on: each record up to and including its first "-"
    first_s, first_y = [], []
    for r, sc in zip(records, scores, strict=True):
        keep = through_first_error(r["label"])
        first_s += sc[:keep]
        first_y += [1 if lab == "+" else 0 for lab in r["label"][:keep]]
    result["up_to_first_error"] = auroc(first_s, first_y)
    result["arithmetic"] = arithmetic_auroc([steps for _, steps in items], scores)
    pos = [s for s, y in zip(flat_s, flat_y, strict=True) if y == 1]
    for kind in sorted(set(kinds) - {"clean"}):
        neg = [s for s, y, k in zip(flat_s, flat_y, kinds, strict=True) if y == 0 and k == kind]
        result[kind] = auroc(pos + neg, [1] * len(pos) + [0] * len(neg))
    return result


# ---------------------------------------------------------------------------------------------------------------


def _question(p: dict[str, Any]) -> str:
    return format_question(p["question"], p.get("choices"))


def _correct(p: dict[str, Any], final_text: str | None) -> bool:
    return final_text is not None and extract_answer(final_text, p.get("choices")) == p["answer"]


def reading_accuracy(policy: Policy, problems: list[dict[str, Any]], images: list[Image.Image]) -> float:
    imgs, prompts, gold = [], [], []
    for p, im in zip(problems, images, strict=True):
        texts = [s["text"] for s in p["steps"]]
        for k, s in enumerate(p["steps"]):
            if s["capability"] == "image_recognition":
                imgs.append(im)
                prompts.append(TINY.render("step", _question(p), texts[:k]))
                gold.append(s["text"])
    outs = policy.generate(imgs, prompts, temperature=0.0)
    return float(np.mean([o == g for o, g in zip(outs, gold, strict=True)]))


def whole_answer_accuracy(
    policy: Policy,
    problems: list[dict[str, Any]],
    images: list[Image.Image],
    kind: Literal["direct", "cot"],
    max_new_tokens: int,
) -> float:
    """Greedy whole answers of one kind, and the share right: the answer read from a CoT's last line, from all of a
    direct answer."""
    prompts = [TINY.render(kind, _question(p)) for p in problems]
    outs = policy.generate(images, prompts, 0.0, stop_at_step=False, max_new_tokens=max_new_tokens)
    texts = [(o.splitlines()[-1] if o else "") if kind == "cot" else o for o in outs]
    right = [extract_answer(t, p.get("choices")) == p["answer"] for t, p in zip(texts, problems, strict=True)]
    return float(np.mean(right))


def complete_paths(
    policy: Policy,
    problems: list[dict[str, Any]],
    images: list[Image.Image],
    starts: Sequence[tuple[int, Sequence[str]]],
    temperature: float,
    max_depth: int = 12,
    retries: int = 3,
) -> list[list[str]]:
    """Paths completed from given prefixes, for the rollout labels (``research.training.rollouts``; no evaluation
    row uses it): for each ``(problem index, steps so far)`` one path, one sampled atomic step per call (all paths
    batched, ``top_k=0, top_p=1.0``), invalid steps resampled, until a final step or ``max_depth`` steps."""
    paths = [list(prefix) for _, prefix in starts]
    owner = [i for i, _ in starts]
    active = [k for k, path in enumerate(paths) if not (path and is_final(path[-1])) and len(path) < max_depth]
    while active:
        pending = list(active)
        chosen: dict[int, str] = {}
        for attempt in range(retries + 1):
            if not pending:
                break
            outs = policy.generate(
                [images[owner[k]] for k in pending],
                [TINY.render("step", _question(problems[owner[k]]), paths[k]) for k in pending],
                temperature,
            )
            still = []
            for k, step in zip(pending, outs, strict=True):
                prev = paths[k][-1] if paths[k] else None
                if invalid_reason(step, prev) is None or attempt == retries:
                    chosen[k] = step
                else:
                    still.append(k)
            pending = still
        for k in active:
            paths[k].append(chosen[k])
        active = [k for k in active if not is_final(paths[k][-1]) and len(paths[k]) < max_depth]
    return paths


def _final(path: list[str]) -> str | None:
    return path[-1] if path and is_final(path[-1]) else None


def service_settings(args: argparse.Namespace) -> Settings:
    """The embedded service on the evaluated checkpoints (memory queue, workers in this process)."""
    return Settings(
        policy_model=str(args.policy),
        prm_model=str(args.prm),
        queue="memory",
        torch_threads=args.threads,
    )


def service_params(
    problem: dict[str, Any], mode: Literal["quick", "beam"], args: argparse.Namespace, seed: int
) -> SolveParams:
    """The solve the evaluation sends for one problem: QuickThink, or the paper's beam (3 candidates, 2 beams,
    ``last`` aggregation), at the run's sampling (``--temperature``, ``--top-p``, ``--top-k``) and ``seed``."""
    fields: dict[str, Any] = {"mode": "quick"}
    if mode == "beam":
        fields = {"mode": "slow", "strategy": "beam", "candidates": 3, "beam_width": 2, "aggregation": "last"}
    return SolveParams.model_validate(
        {
            "question": problem["question"],
            "choices": problem.get("choices"),
            "max_steps": SERVICE_MAX_STEPS,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "seed": seed,
            **fields,
        }
    )


async def _service_solves(
    settings: Settings, jobs: Sequence[tuple[SolveParams, bytes | None]], concurrency: int
) -> list[SolveResponse]:
    from research.eval.runner import embedded_client

    gate = asyncio.Semaphore(concurrency)
    async with embedded_client(settings) as client:

        async def one(params: SolveParams, image: bytes | None) -> SolveResponse:
            async with gate:
                return await client.solve(params, image)

        return list(await asyncio.gather(*(one(p, i) for p, i in jobs)))


def service_run(
    args: argparse.Namespace, root: Path, problems: list[dict[str, Any]], mode: Literal["quick", "beam"]
) -> list[SolveResponse]:
    """QuickThink or beam search as the service runs them (its registered strategies, in this process, on the same
    backends), one solve per problem with seed ``args.seed + index``."""
    jobs = [
        (service_params(p, mode, args, args.seed + i), (root / p["image"]).read_bytes() if p.get("image") else None)
        for i, p in enumerate(problems)
    ]
    return asyncio.run(_service_solves(service_settings(args), jobs, args.concurrency))


def sampling_of(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling a run used, stated beside every figure it produces."""
    return {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed}


SERVICE_MAX_STEPS = 12
"""Steps per path in the service runs."""

MODES = ("auroc", "read", "direct", "cot", "beam", "service_quick")
REMOVED_MODES = {
    "greedy": "service_quick with --temperature 0",
    "quick": "service_quick (the service's QuickThink)",
    "bon": "atomthink eval --mode slow --strategy best_of_n,majority,weighted_majority --candidates 1,2,4,8 "
    "--paths DIR (every N on the same saved paths)",
    "adaptive": "atomthink eval --mode slow --strategy majority,weighted_majority --adaptive --paths DIR",
}
"""Modes this module ran with a sampler of its own, and where the service's strategies measure them now."""


def parse_modes(value: str) -> set[str]:
    modes = {m.strip() for m in value.split(",") if m.strip()}
    gone = [f"{m}: {REMOVED_MODES[m]}" for m in sorted(modes & REMOVED_MODES.keys())]
    if gone:
        raise argparse.ArgumentTypeError("modes now measured by the service's strategies; use " + "; ".join(gone))
    unknown = sorted(modes - set(MODES))
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(MODES)}; got {value!r}")
    return modes


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    root = Path(args.data)
    problems = read_jsonl(root / "problems.jsonl")[: args.n]
    modes: set[str] = args.modes
    results: dict[str, Any] = {"n": len(problems), "data": str(root), **sampling_of(args)}
    results["implementation"] = {
        "beam_w2_c3, service_quick": "the service's registered strategies (embedded, memory queue), sampling above",
        "read, direct, cot": "this module's batched transformers greedy decoding",
    }
    t0 = time.time()
    prm = Prm(args.prm) if args.prm and "auroc" in modes else None
    if prm is not None:
        recs = read_jsonl(root / "prm.jsonl")
        ids = {p["id"] for p in problems}
        recs = [r for r in recs if r["id"] in ids]
        results["prm_auroc"] = prm_auroc(prm, recs)
        print("prm_auroc", json.dumps(results["prm_auroc"]), flush=True)
    if not args.policy:
        return results
    if modes & {"read", "direct", "cot"}:
        policy = Policy(args.policy)
        images = [Image.open(root / p["image"]).convert("RGB") for p in problems]
        if "read" in modes:
            results["reading_accuracy"] = reading_accuracy(policy, problems, images)
            print("reading", results["reading_accuracy"], flush=True)
        if "direct" in modes:
            results["direct"] = whole_answer_accuracy(policy, problems, images, "direct", max_new_tokens=8)
            print("direct", results["direct"], flush=True)
        if "cot" in modes:
            results["cot_greedy"] = whole_answer_accuracy(policy, problems, images, "cot", max_new_tokens=300)
            print("cot", results["cot_greedy"], flush=True)
    if "beam" in modes and args.prm:
        solved = service_run(args, root, problems, "beam")
        results["beam_w2_c3"] = float(np.mean([r.answer == p["answer"] for p, r in zip(problems, solved, strict=True)]))
        results["beam_paths"] = [[step.text for step in r.steps] for r in solved]
        print("beam (the service's)", results["beam_w2_c3"], flush=True)
    if "service_quick" in modes:
        solved = service_run(args, root, problems, "quick")
        results["service_quick"] = float(
            np.mean([r.answer == p["answer"] for p, r in zip(problems, solved, strict=True)])
        )
        print("quick (the service's)", results["service_quick"], flush=True)
    results["seconds"] = round(time.time() - t0, 1)
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None)
    p.add_argument("--prm", default=None)
    p.add_argument("--data", required=True, help="a data-engine directory (problems.jsonl, prm.jsonl, images/)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument(
        "--modes",
        type=parse_modes,
        default=set(MODES),
        help=f"comma list of {', '.join(MODES)} (default: all); beam and service_quick run the service's "
        "strategies; best-of-N, votes and adaptive compute: atomthink eval",
    )
    p.add_argument("--temperature", type=float, default=0.7, help="service runs: sampling temperature")
    p.add_argument("--top-p", type=float, default=None, help="service runs: unset, the prompt preset's (tiny: 0.9)")
    p.add_argument("--top-k", type=int, default=None, help="service runs: unset, the prompt preset's (tiny: 50)")
    p.add_argument("--concurrency", type=int, default=8, help="service runs: solves in flight at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results to this file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.training.evaluate")
    add_arguments(parser)
    args = parser.parse_args(argv)
    results = evaluate(args)
    print(json.dumps({k: v for k, v in results.items() if k != "beam_paths"}, indent=2))  # paths: --json only
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
