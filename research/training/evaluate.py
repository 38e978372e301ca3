"""A self-contained measurement of the tiny models with plain ``transformers`` (no service code).

* reading accuracy: greedy next step after the gold prefix, on every ``image_recognition`` step;
* direct / cot / quick (one sampled step at a time) accuracy;
* best-of-N (N quick paths, finished ones first as the service ranks them, then by PRM ``min``/``mean``/``last``)
  and majority vote over the same N paths;
* step-wise beam search (width 2, 3 candidates per beam, all 6 ranked by the PRM's score of the last step);
* PRM step-level AUROC on labelled held-out PRM records (overall, on the steps up to and including each record's
  first ``-``, per corruption kind, and within calculation steps: right against wrong arithmetic, where step type
  cannot stand in for correctness).

The policy is called exactly as the serving contract says: the TINY prompt through the processor's chat template,
``padding_side="left"``, generation stopped at the step delimiter or EOS.

    python -m research.training.evaluate --policy models/atomthink-tiny-policy --prm models/atomthink-tiny-prm \
        --data data/heldout --n 500
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict
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
from service.orchestrator.strategies.voting import tally
from service.orchestrator.tree import rank_key
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
        token_counts: list[int] | None = None,
    ) -> list[str]:
        """Sampled continuations; ``token_counts``, when given, gets each one's generated token count."""
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
                if token_counts is not None:
                    token_counts.append(len(ids))
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


def complete_paths(
    policy: Policy,
    problems: list[dict[str, Any]],
    images: list[Image.Image],
    starts: Sequence[tuple[int, Sequence[str]]],
    temperature: float,
    max_depth: int = 12,
    retries: int = 3,
    tokens: list[list[int]] | None = None,
) -> list[list[str]]:
    """QuickThink from given prefixes: for each ``(problem index, steps so far)`` one path, one sampled atomic step
    per call (all paths batched), invalid steps resampled, until a final step or ``max_depth`` steps.

    ``tokens``, when given, is filled with the tokens each new step of each path took to generate (its resamples
    included)."""
    paths = [list(prefix) for _, prefix in starts]
    spent: list[list[int]] = [[] for _ in paths]
    owner = [i for i, _ in starts]
    active = [k for k, path in enumerate(paths) if not (path and is_final(path[-1])) and len(path) < max_depth]
    while active:
        pending = list(active)
        chosen: dict[int, str] = {}
        step_tokens = dict.fromkeys(active, 0)
        for attempt in range(retries + 1):
            if not pending:
                break
            counts: list[int] = []
            kwargs: dict[str, Any] = {"token_counts": counts} if tokens is not None else {}  # test policies don't count
            outs = policy.generate(
                [images[owner[k]] for k in pending],
                [TINY.render("step", _question(problems[owner[k]]), paths[k]) for k in pending],
                temperature,
                **kwargs,
            )
            counts = counts or [0] * len(outs)
            still = []
            for k, step, count in zip(pending, outs, counts, strict=True):
                step_tokens[k] += count
                prev = paths[k][-1] if paths[k] else None
                if invalid_reason(step, prev) is None or attempt == retries:
                    chosen[k] = step
                else:
                    still.append(k)
            pending = still
        for k in active:
            paths[k].append(chosen[k])
            spent[k].append(step_tokens[k])
        active = [k for k in active if not is_final(paths[k][-1]) and len(paths[k]) < max_depth]
    if tokens is not None:
        tokens[:] = spent
    return paths


def sample_paths(
    policy: Policy,
    problems: list[dict[str, Any]],
    images: list[Image.Image],
    n: int,
    temperature: float,
    max_depth: int = 12,
    retries: int = 3,
    tokens: list[list[list[int]]] | None = None,
) -> list[list[list[str]]]:
    """QuickThink paths: ``n`` independent ones per problem; ``tokens``, when given, gets each step's tokens."""
    starts: list[tuple[int, Sequence[str]]] = [(i, []) for i in range(len(problems)) for _ in range(n)]
    spent: list[list[int]] = []
    flat = complete_paths(policy, problems, images, starts, temperature, max_depth, retries, tokens=spent)
    if tokens is not None:
        tokens[:] = [spent[i * n : (i + 1) * n] for i in range(len(problems))]
    return [flat[i * n : (i + 1) * n] for i in range(len(problems))]


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
"""Steps per path in the service runs (this module's sampler stops at 12 too)."""

_PATHS_ARGS = ("policy", "data", "temperature", "seed")


def weights_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 of a checkpoint's ``*.safetensors`` files: a policy retrained into the same folder differs."""
    digest = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _paths_meta(args: argparse.Namespace) -> dict[str, Any]:
    """What made a set of sampled paths: the arguments that matter and the policy's weights."""
    return {**{k: getattr(args, k) for k in _PATHS_ARGS}, "policy_weights": weights_fingerprint(args.policy)}


def save_paths(
    args: argparse.Namespace,
    problems: list[dict[str, Any]],
    paths: list[list[list[str]]],
    tokens: list[list[list[int]]],
) -> None:
    """Write the sampled QuickThink paths (and the tokens each of their steps took) with what made them and the
    RNG state after sampling."""
    Path(args.paths).write_text(
        json.dumps(
            {
                **_paths_meta(args),
                "ids": [p["id"] for p in problems],
                "paths": paths,
                "tokens": tokens,
                "rng_state": torch.get_rng_state().tolist(),
            }
        )
        + "\n"
    )


def load_paths(
    args: argparse.Namespace, problems: list[dict[str, Any]], per_problem: int
) -> tuple[list[list[list[str]]], list[list[list[int]]] | None]:
    """Paths saved by an earlier run with the same policy (path and weights), data, problems, samples, temperature
    and seed, with the torch RNG put back where sampling left it, so later modes (beam) draw what they would have
    drawn; with the tokens of every step where the file has them."""
    saved = json.loads(Path(args.paths).read_text())
    wrong = [k.replace("_", " ") for k, v in _paths_meta(args).items() if saved.get(k) != v]
    ids = [p["id"] for p in problems]
    if saved["ids"] != ids or len(saved["paths"][0]) != per_problem:
        wrong.append("problems or samples per problem")
    if wrong:
        raise SystemExit(
            f"{args.paths} was sampled with other settings ({', '.join(wrong)}): delete it or pass another --paths"
        )
    torch.set_rng_state(torch.tensor(saved["rng_state"], dtype=torch.uint8))
    paths: list[list[list[str]]] = saved["paths"]
    return paths, saved.get("tokens")


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    root = Path(args.data)
    problems = read_jsonl(root / "problems.jsonl")[: args.n]
    images = [Image.open(root / p["image"]).convert("RGB") for p in problems]
    results: dict[str, Any] = {"n": len(problems), "data": str(root), **sampling_of(args)}
    results["implementation"] = {
        "beam_w2_c3, service_quick": "the service's registered strategies (embedded, memory queue), sampling above",
        "quick, best_of_n, adaptive, greedy, direct, cot": "this module's batched transformers sampler (top_k=0, "
        "top_p=1.0), temperature above",
    }
    t0 = time.time()
    policy = Policy(args.policy) if args.policy else None
    prm = Prm(args.prm) if args.prm else None
    modes = set(args.modes.split(","))
    if prm is not None and "auroc" in modes:
        recs = read_jsonl(root / "prm.jsonl")
        ids = {p["id"] for p in problems}
        recs = [r for r in recs if r["id"] in ids]
        results["prm_auroc"] = prm_auroc(prm, recs)
        print("prm_auroc", json.dumps(results["prm_auroc"]), flush=True)
    if policy is None:
        return results
    if "read" in modes:
        results["reading_accuracy"] = reading_accuracy(policy, problems, images)
        print("reading", results["reading_accuracy"], flush=True)
    if "direct" in modes:
        outs = policy.generate(
            images, [TINY.render("direct", _question(p)) for p in problems], 0.0, stop_at_step=False, max_new_tokens=8
        )
        results["direct"] = float(
            np.mean([extract_answer(o, p.get("choices")) == p["answer"] for o, p in zip(outs, problems, strict=True)])
        )
        print("direct", results["direct"], flush=True)
    if "cot" in modes:
        outs = policy.generate(
            images, [TINY.render("cot", _question(p)) for p in problems], 0.0, stop_at_step=False, max_new_tokens=300
        )
        results["cot_greedy"] = float(
            np.mean(
                [
                    extract_answer(o.splitlines()[-1] if o else "", p.get("choices")) == p["answer"]
                    for o, p in zip(outs, problems, strict=True)
                ]
            )
        )
        print("cot", results["cot_greedy"], flush=True)
    if "greedy" in modes:
        paths = sample_paths(policy, problems, images, 1, 0.0)
        results["quick_greedy"] = float(
            np.mean([_correct(p, _final(ps[0])) for p, ps in zip(problems, paths, strict=True)])
        )
        print("quick_greedy", results["quick_greedy"], flush=True)
    n = args.best_of
    if "quick" in modes or "bon" in modes:
        per_problem = n if "bon" in modes else 1
        tokens: list[list[list[int]]] | None = []
        if args.paths and Path(args.paths).exists():
            paths, tokens = load_paths(args, problems, per_problem)
        else:
            t = time.time()
            paths = sample_paths(policy, problems, images, per_problem, args.temperature, tokens=tokens)
            results["quick_seconds_per_problem"] = (time.time() - t) / len(problems) / len(paths[0])
            if args.paths:
                save_paths(args, problems, paths, tokens or [])
        correct = np.array([[_correct(p, _final(path)) for path in ps] for p, ps in zip(problems, paths, strict=True)])
        results["quick"] = float(correct.mean())  # every sample is one independent QuickThink run
        results["quick_first_sample"] = float(correct[:, 0].mean())
        results["pass_at_n"] = float(correct.any(1).mean())
        print("quick", results["quick"], flush=True)
        if "bon" in modes and prm is not None:
            flat = [(_question(p), path) for p, ps in zip(problems, paths, strict=True) for path in ps]
            scores = prm.score(flat)
            # the same comparison on the policy's own calculation steps (the errors best-of-N must reject)
            results["sampled_arithmetic_auroc"] = arithmetic_auroc([path for _, path in flat], scores)
            print("sampled_arithmetic_auroc", results["sampled_arithmetic_auroc"], flush=True)
            sweep: dict[str, dict[str, float]] = {}
            per = [scores[i * n : (i + 1) * n] for i in range(len(problems))]
            for k in [k for k in (1, 2, 4, 8, 16) if k <= n]:
                res: dict[str, list[bool]] = defaultdict(list)
                for p, ps, sc in zip(problems, paths, per, strict=True):
                    ps_k, sc_k = ps[:k], sc[:k]
                    for agg in ("min", "mean", "last"):
                        best = max(range(k), key=lambda j: rank_key(_final(ps_k[j]) is not None, sc_k[j], agg))
                        res[f"best_of_n_{agg}"].append(_correct(p, _final(ps_k[best])))
                    votes = Counter(extract_answer(f, p.get("choices")) for f in map(_final, ps_k) if f)
                    vote = votes.most_common(1)[0][0] if votes else None
                    res["majority"].append(vote == p["answer"])
                    # PRM-weighted vote (sum of min scores per answer), as the service's weighted_majority
                    voters = [(f, s) for f, s in zip(map(_final, ps_k), sc_k, strict=True) if f and s]
                    weighted = tally(
                        [extract_answer(f, p.get("choices")) for f, _ in voters], [min(s) for _, s in voters]
                    )
                    wv = max(weighted, key=weighted.__getitem__) if weighted else None
                    res["weighted_vote_min"].append(wv == p["answer"])
                sweep[str(k)] = {key: float(np.mean(v)) for key, v in res.items()}
            results["best_of_n"] = sweep
            print("best_of_n", json.dumps(sweep), flush=True)
            if "adaptive" in modes:
                results["adaptive"] = _adaptive(args, problems, paths, tokens, per)
    if "beam" in modes and prm is not None:
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


def _adaptive(
    args: argparse.Namespace,
    problems: list[dict[str, Any]],
    paths: list[list[list[str]]],
    tokens: list[list[list[int]]] | None,
    scores: list[list[list[float]]],
) -> list[dict[str, Any]]:
    """Fixed N against adaptive votes and pruned best-of-N, replayed by the service's strategies over the paths."""
    from research.training import adaptive

    if not tokens:
        raise SystemExit(f"{args.paths} has no per-step token counts: delete it to sample the paths again")
    rows = adaptive.compare(problems, paths, tokens, scores, sizes=[k for k in (1, 2, 4, 8, 16) if k <= args.best_of])
    print(adaptive.markdown(rows), flush=True)
    if args.plot:
        print("plot", adaptive.plot(rows, Path(args.plot)), flush=True)
    return [asdict(row) for row in rows]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None)
    p.add_argument("--prm", default=None)
    p.add_argument("--data", required=True, help="a data-engine directory (problems.jsonl, prm.jsonl, images/)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument(
        "--modes",
        default="auroc,read,direct,cot,greedy,quick,bon,beam",
        help="comma-separated; also adaptive (with bon): fixed N against adaptive votes and pruned best-of-N; "
        "service_quick: QuickThink as the service runs it (beam always runs the service's)",
    )
    p.add_argument("--best-of", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=None, help="service runs: unset, the prompt preset's (tiny: 0.9)")
    p.add_argument("--top-k", type=int, default=None, help="service runs: unset, the prompt preset's (tiny: 50)")
    p.add_argument("--concurrency", type=int, default=8, help="service runs: solves in flight at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--plot", default=None, help="mode adaptive: save accuracy against mean tokens to this PNG")
    p.add_argument(
        "--paths",
        default=None,
        help="JSON file of the sampled QuickThink paths: written when missing, reused when present (same policy "
        "path and weights, data, problems, samples, temperature and seed), so other PRMs are compared on the same "
        "samples",
    )


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
