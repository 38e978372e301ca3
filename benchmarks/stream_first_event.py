"""Time to the first search event against time to the answer, for streamed ``/solve`` (prints figures, asserts nothing).

    .venv/bin/atomthink serve &
    .venv/bin/python benchmarks/stream_first_event.py --requests 5

The point of streaming: a client sees the first step long before a slow search ends.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=8)
    args = parser.parse_args()
    image = "data:image/png;base64," + base64.b64encode((ROOT / "examples/figure.png").read_bytes()).decode()
    question = (ROOT / "examples/question.txt").read_text().strip()
    first: list[float] = []
    select: list[float] = []
    total: list[float] = []
    events: list[int] = []
    for seed in range(args.requests):
        body = {"question": question, "image": image, "mode": "slow", "candidates": args.candidates,
                "max_steps": args.max_steps, "seed": seed, "temperature": 1.6, "stream": True}  # fmt: skip
        started = time.perf_counter()
        marks: dict[str, float] = {}
        count = 0
        with httpx.stream("POST", f"{args.url}/solve", json=body, timeout=600) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    count += 1
                    marks.setdefault(line[7:], (time.perf_counter() - started) * 1000)
        first.append(marks["expansion"])
        select.append(marks["selection"])
        total.append(marks["result"])
        events.append(count)
    print(f"slow beam, {args.candidates} candidates, width 2, T = 1.6, {args.requests} requests (median ms):")
    print(f"  first expansion event  {statistics.median(first):8.1f}")
    print(f"  first selection event  {statistics.median(select):8.1f}")
    print(f"  result event           {statistics.median(total):8.1f}")
    print(f"  events per request     {statistics.median(events):8.0f}")


if __name__ == "__main__":
    main()
