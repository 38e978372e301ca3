"""``atomthink data``: generate a seeded synthetic visual-math dataset (images + SFT / PRM / problems JSONL)."""

from __future__ import annotations

import argparse
import json


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("data", help="generate synthetic visual-math problems, SFT and PRM records")
    p.add_argument("--out", required=True, help="output directory (images/, problems.jsonl, sft.jsonl, prm.jsonl)")
    p.add_argument("--n", type=int, default=4000, help="number of problems")
    p.add_argument("--seed", type=int, default=1, help="problem stream seed (use unseen seeds for held-out sets)")
    p.add_argument("--prm-negatives", type=int, default=2, help="corrupted paths per problem in prm.jsonl")
    p.add_argument(
        "--demo-errors",
        type=float,
        default=0.0,
        help="share of problems whose step records follow a corrupted path (an imperfect demonstrator), 0 to <1",
    )
    p.add_argument(
        "--text-dominant",
        action="store_true",
        help="write only problems.jsonl of the text-dominant variant (values in the question, no images)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from research.data.records import write_dataset

    if args.text_dominant:
        from pathlib import Path

        from research.data.text_dominant import text_problem_record, text_problems

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = [text_problem_record(p) for p in text_problems(args.seed, args.n)]
        (out / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(json.dumps({"out": args.out, "seed": args.seed, "problems": len(rows)}))
        return 0
    counts = write_dataset(
        args.out, args.n, args.seed, args.prm_negatives, demo_errors=args.demo_errors, progress=not args.quiet
    )
    print(json.dumps({"out": args.out, "seed": args.seed, **counts}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atomthink")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    args = parser.parse_args(["data", *(argv if argv is not None else __import__("sys").argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
