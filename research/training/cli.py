"""``atomthink train policy|prm``: train the tiny policy (SFT) or the tiny PRM on data-engine output."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = subparsers.add_parser("train", help="train policies and PRMs; label PRM data")
    sub = train.add_subparsers(dest="train_target", required=True)

    p = sub.add_parser("policy", help="SFT of the tiny LLaVA policy (perception stage, then Markov step records)")
    p.add_argument("--data", nargs="+", required=True, help="data-engine directories (sft.jsonl, problems.jsonl)")
    p.add_argument("--out", required=True, help="checkpoint directory (replaced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=5000, help="SFT optimizer steps")
    p.add_argument("--perception-steps", type=int, default=300, help="perception-only steps before SFT")
    p.add_argument("--read-steps", type=int, default=300, help="steps on dense reading records after perception")
    p.add_argument("--max-minutes", type=float, default=55.0, help="stop (and save) after this many minutes")
    p.add_argument("--stop-after", type=int, default=None, help="stop after N optimizer steps (all stages)")
    p.add_argument("--init-from", default=None, help="continue from this policy checkpoint")
    p.add_argument("--kinds", default="step,direct,cot,read", help="SFT record kinds to train on")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vision-lr", type=float, default=3e-3)
    p.add_argument("--perception-weight", type=float, default=0.2)
    p.add_argument("--drill-batch", type=int, default=64, help="arithmetic drill lines per step (0: off)")
    p.add_argument("--drill-weight", type=float, default=1.0)
    p.add_argument("--hard-repeat", type=int, default=2, help="epochs' repeats of calculation/conclusion steps")
    p.add_argument("--text-hidden", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=4, help="decoder layers (the shipped policy has 4)")
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--max-records", type=int, default=None, help="use only the first N SFT records per directory")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: ATOMTHINK_TORCH_THREADS, else 2)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_policy)

    q = sub.add_parser("prm", help="train the tiny text-only PRM on prm.jsonl records")
    q.add_argument("--data", nargs="+", required=True, help="data-engine directories (prm.jsonl)")
    q.add_argument("--out", required=True, help="checkpoint directory (replaced)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--steps", type=int, default=2000)
    q.add_argument("--max-minutes", type=float, default=55.0)
    q.add_argument("--stop-after", type=int, default=None, help="stop after N optimizer steps")
    q.add_argument("--init-from", default=None, help="continue from this PRM checkpoint")
    q.add_argument("--init-from-policy", default=None, help="start from this tiny policy's language model")
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--hidden", type=int, default=128)
    q.add_argument("--layers", type=int, default=3)
    q.add_argument("--lm-weight", type=float, default=0.5, help="auxiliary next-token loss on correct steps")
    q.add_argument("--drill-batch", type=int, default=64, help="arithmetic drill lines per step (0: off)")
    q.add_argument("--verify-batch", type=int, default=0,
                   help="verification drill paths per step: a op b = r, r right or slipped (0: off)")  # fmt: skip
    q.add_argument("--verify-pretrain-steps", type=int, default=0,
                   help="steps on the arithmetic and verification drills alone before the PRM records")  # fmt: skip
    q.add_argument("--max-records", type=int, default=None)
    q.add_argument("--supervise", choices=("all", "first_error", "local"), default="all",
                   help="label every step, only those up to the first '-', or each by its own validity")  # fmt: skip
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=run_prm)

    r = sub.add_parser(
        "rollout-labels",
        help="PRM records from the policy's own sampled steps, labelled by rollouts (Math-Shepherd)",
    )
    r.add_argument("--policy", required=True, help="policy checkpoint that samples the paths and the rollouts")
    r.add_argument("--data", required=True, help="a data-engine directory (problems.jsonl, images/)")
    r.add_argument("--out", required=True, help="output directory (prm.jsonl, meta.json)")
    r.add_argument("--problems", type=int, default=1500)
    r.add_argument("--offset", type=int, default=0, help="skip the first N problems")
    r.add_argument("--samples", type=int, default=4, help="QuickThink paths sampled per problem")
    r.add_argument("--rollouts", type=int, default=4, help="completions per prefix of a wrong path")
    r.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the labelled paths")
    r.add_argument("--rollout-temperature", type=float, default=None, help="temperature of the labelling rollouts")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=run_rollout_labels)

    t = sub.add_parser("text-engine-records", help="engine-corrupted PRM records of text-dominant problems")
    t.add_argument("--out", required=True, help="output directory (prm.jsonl, meta.json)")
    t.add_argument("--n", type=int, default=6000, help="problems")
    t.add_argument("--seed", type=int, default=2, help="problem stream (never the held-out 20261125)")
    t.add_argument("--negatives", type=int, default=2, help="corrupted paths per problem")
    t.set_defaults(func=run_text_engine_records)

    v = sub.add_parser(
        "text-rollout-labels",
        help="Math-Shepherd rollout labels of the text policy's paths sampled on vLLM (needs the vLLM venv)",
    )
    v.add_argument("--policy", required=True, help="text policy checkpoint (atomthink-tiny-text-policy)")
    v.add_argument("--out", required=True, help="output directory (prm.jsonl, meta.json)")
    v.add_argument("--seed", type=int, default=3, help="problem stream (never the held-out 20261125)")
    v.add_argument("--problems", type=int, default=1500)
    v.add_argument("--offset", type=int, default=0, help="skip the first N problems")
    v.add_argument("--samples", type=int, default=4, help="QuickThink paths sampled per problem")
    v.add_argument("--rollouts", type=int, default=2, help="completions per prefix of a wrong path")
    v.add_argument("--temperature", type=float, default=1.6, help="sampling temperature of the labelled paths")
    v.add_argument("--top-p", type=float, default=1.0)
    v.add_argument("--top-k", type=int, default=0, help="0 = off")
    v.add_argument("--rollout-temperature", type=float, default=None, help="temperature of the labelling rollouts")
    v.add_argument("--max-steps", type=int, default=8)
    v.add_argument("--cores", default="1", help="VLLM_CPU_OMP_THREADS_BIND of the engine")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=run_text_rollout_labels)

    c = sub.add_parser(
        "cluster-labels",
        help="Math-Shepherd rollout labels computed by the cluster's policy workers (Redis queue from the settings)",
    )
    c.add_argument("--data", required=True, help="problems: a data-engine folder, a MathVista or MathVerse file")
    c.add_argument("--out", required=True, help="output folder (prm.jsonl, meta.json)")
    c.add_argument("--problems", type=int, default=200)
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--samples", type=int, default=4, help="QuickThink paths sampled per problem")
    c.add_argument("--rollouts", type=int, default=4, help="completions per prefix of a wrong path")
    c.add_argument("--temperature", type=float, default=0.7)
    c.add_argument("--rollout-temperature", type=float, default=None)
    c.add_argument("--top-p", type=float, default=None, help="default: the prompt preset's")
    c.add_argument("--top-k", type=int, default=None, help="0 = off; default: the prompt preset's")
    c.add_argument("--max-depth", type=int, default=12)
    c.add_argument("--concurrency", type=int, default=32, help="problems labelled at once")
    c.add_argument("--prm-preset", default="math-psa", help="step tag of the written process strings")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--redis-url", default=None, help="overrides ATOMTHINK_REDIS_URL")
    c.add_argument("--key-prefix", default=None, help="overrides ATOMTHINK_KEY_PREFIX")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=run_cluster_labels)

    j = sub.add_parser("judge-labels", help="step labels from an LLM judge behind an OpenAI-compatible endpoint")
    j.add_argument("--data", required=True, help="PRM-layout JSONL of paths (question, process, answer)")
    j.add_argument("--out", required=True, help="output folder (prm.jsonl, rejected.jsonl, meta.json)")
    j.add_argument("--judge-url", default=None, help="overrides ATOMTHINK_LABEL_JUDGE_BASE_URL (no default)")
    j.add_argument("--judge-model", default=None, help="overrides ATOMTHINK_LABEL_JUDGE_MODEL")
    j.add_argument("--prm-preset", default="math-psa", help="step tag of the process strings")
    j.add_argument("--concurrency", type=int, default=8)
    j.add_argument("--limit", type=int, default=None)
    j.add_argument("--quiet", action="store_true")
    j.set_defaults(func=run_judge_labels)

    n = sub.add_parser("negatives", help="corrupted negatives (factual, calculation, logic, empty, repeated steps)")
    n.add_argument("--data", required=True, help="PRM-layout JSONL; paths labelled all '+' are corrupted")
    n.add_argument("--out", required=True, help="output JSONL of negative records")
    n.add_argument("--kinds", default="factual,calculation,logic,empty,repeated")
    n.add_argument("--per-kind", type=int, default=1, help="negatives of each kind per correct path")
    n.add_argument("--prm-preset", default="math-psa", help="step tag of the process strings")
    n.add_argument("--seed", type=int, default=0)
    n.set_defaults(func=run_negatives)

    f = sub.add_parser("sft-lora", help="atomic-step SFT with LoRA of a real multimodal checkpoint (Markov records)")
    f.add_argument("--model", required=True, help="base checkpoint (LLaVA-style, Qwen2-VL, Qwen2.5-VL, Mllama)")
    f.add_argument("--data", nargs="+", required=True, help="SFT JSONL files or folders holding sft.jsonl")
    f.add_argument("--out", required=True)
    f.add_argument("--preset", default="auto", help="prompt preset (auto: the base's atomthink.json, else v1)")
    f.add_argument("--image-root", default=None)
    _lora_arguments(f)
    f.set_defaults(func=run_sft_lora)

    g = sub.add_parser("prm-lora", help="PRM training with LoRA: Math-psa tags or the Qwen2 process-reward head")
    g.add_argument("--model", required=True, help="base checkpoint (a causal LM; qwen2 for --prm-preset qwen-prm)")
    g.add_argument("--data", nargs="+", required=True, help="PRM JSONL files or folders holding prm.jsonl")
    g.add_argument("--out", required=True)
    g.add_argument("--prm-preset", default="math-psa", choices=("math-psa", "qwen-prm"))
    _lora_arguments(g)
    g.set_defaults(func=run_prm_lora)


def _lora_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--adapter-only", action="store_true", help="save the LoRA adapter instead of a merged model")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)


def _config(cls: type[ConfigT], args: argparse.Namespace, **overrides: Any) -> ConfigT:
    """``cls`` from the parsed options named like its fields (the rest keep their defaults), then ``overrides``."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **overrides})


def run_policy(args: argparse.Namespace) -> int:
    from research.training.policy import PolicyTrainConfig, train_policy

    cfg = _config(PolicyTrainConfig, args, kinds=tuple(args.kinds.split(",")))
    print(json.dumps(train_policy(cfg, progress=not args.quiet), indent=2))
    return 0


def run_prm(args: argparse.Namespace) -> int:
    from research.training.prm import PrmTrainConfig, train_prm

    cfg = _config(PrmTrainConfig, args)
    print(json.dumps(train_prm(cfg, progress=not args.quiet), indent=2))
    return 0


def run_rollout_labels(args: argparse.Namespace) -> int:
    from research.training.rollouts import RolloutLabelConfig, write_rollout_labels

    cfg = _config(RolloutLabelConfig, args)
    print(json.dumps(write_rollout_labels(cfg, progress=not args.quiet), indent=2))
    return 0


def run_text_engine_records(args: argparse.Namespace) -> int:
    from research.training.text_prm import write_text_engine_records

    print(json.dumps(write_text_engine_records(args.out, args.n, args.seed, args.negatives), indent=2))
    return 0


def run_text_rollout_labels(args: argparse.Namespace) -> int:
    from research.training.text_prm import TextRolloutConfig, write_text_rollout_labels

    cfg = _config(TextRolloutConfig, args)
    print(json.dumps(write_text_rollout_labels(cfg, progress=not args.quiet), indent=2))
    return 0


def run_cluster_labels(args: argparse.Namespace) -> int:
    import asyncio

    from atomthink.settings import Settings
    from research.training.cluster_labels import ClusterLabelConfig, label_with_cluster

    overrides = {k: v for k, v in (("redis_url", args.redis_url), ("key_prefix", args.key_prefix)) if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    cfg = _config(ClusterLabelConfig, args)
    print(json.dumps(asyncio.run(label_with_cluster(cfg, settings, progress=not args.quiet)), indent=2))
    return 0


def run_judge_labels(args: argparse.Namespace) -> int:
    import asyncio

    from atomthink.settings import Settings
    from research.training.step_judge import JudgeLabelConfig, StepJudge, judge_labels

    overrides = {k: v for k, v in (("label_judge_base_url", args.judge_url), ("label_judge_model", args.judge_model))
                 if v is not None}  # fmt: skip
    settings = Settings(**overrides)  # type: ignore[arg-type]
    cfg = _config(JudgeLabelConfig, args)

    async def go() -> dict[str, Any]:
        async with StepJudge.from_settings(settings) as judge:
            return await judge_labels(cfg, judge, progress=not args.quiet)

    print(json.dumps(asyncio.run(go()), indent=2))
    return 0


def run_negatives(args: argparse.Namespace) -> int:
    from research.training.negatives import write_negatives

    summary = write_negatives(args.data, args.out, args.kinds.split(","), args.per_kind, args.prm_preset, args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def run_sft_lora(args: argparse.Namespace) -> int:
    from research.training.lora_sft import LoraSftConfig, train_lora_sft

    cfg = _config(LoraSftConfig, args, merge=not args.adapter_only)
    print(json.dumps(train_lora_sft(cfg), indent=2))
    return 0


def run_prm_lora(args: argparse.Namespace) -> int:
    from research.training.lora_prm import LoraPrmConfig, train_lora_prm

    cfg = _config(LoraPrmConfig, args, merge=not args.adapter_only)
    print(json.dumps(train_lora_prm(cfg), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atomthink")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    args = parser.parse_args(["train", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
