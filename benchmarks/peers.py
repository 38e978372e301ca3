"""Ours beside its_hub 1.2.0 on the same vLLM CPU engines, and both against the engines' own floor. Prints figures;
asserts nothing (the CI smoke, ``tests/integration/test_peers_smoke.py``, runs a tiny round of it).

Fairness rules (also the head of ``docs/peers.md``):

- **One set of engines for everyone**: the policy is one in-process ``AsyncLLM`` (``atomthink-tiny-text-policy``,
  prefix caching on, its compute threads pinned to ``--policy-cores``) and the PRM one ``vllm serve`` of
  ``--prm-model`` (default ``atomthink-tiny-text-prm``, the PRM trained on this policy's own steps; completion
  log-probabilities, pinned to ``--prm-cores``). The Redis path starts its own policy worker
  process on the same cores after the in-process engine is closed.
- **The same prompts and step rule**: the ``tiny`` preset's step prompt (earlier steps in the user turn), ``\\n`` as
  the step boundary, a step holding "final answer" ends a path. its_hub's adapters (below, the only glue: its
  ``AbstractLanguageModel`` and ``AbstractProcessRewardModel`` / ``AbstractOutcomeRewardModel``) call the very
  backends our workers call (``VllmPolicy.agenerate``, ``OpenAICompletionsPrm.ascore``), so both send the engines
  the same token sequences for the same states.
- **The same parameters**: temperature, top_p, top_k (``--top-p`` / ``--top-k``, default 1.0 / 0: unrestricted
  sampling, where the text policy errs often enough for search to matter, as the multimodal tables sample), candidates,
  beam width, step limit, the PRM's step aggregation (``last``). Seeds: ours are seeded per request; its_hub takes
  none, so its adapter draws a fresh seed per call.
- its_hub is installed from PyPI (``its_hub[lm]==1.2.0``) into ``.venv-vllm`` by ``scripts/install-vllm.sh``, never
  vendored or patched; its algorithms run as its users run them (``BeamSearch``, ``ParticleFiltering``,
  ``BestOfN``, ``SelfConsistency`` with their defaults).
- Rounds alternate ours, peer, peer, ours (``--blocks`` such blocks); every round draws problems no earlier round
  used (held-out seed 20261125, never trained on).

Strategy mapping (C candidates, W beam width, S steps):

- ``beam``: ours ``strategy=beam, candidates=C, beam_width=W`` (the W best of the C x W children of the kept beams);
  its_hub ``BeamSearch(beam_width=W)`` with budget C x W (W kept, each copied C times: C x W paths per level).
- ``particle_filtering``: ours ``strategy=particle_filter, candidates=C x W`` (particles on one node share a policy
  call); its_hub ``ParticleFiltering`` with budget C x W particles; both weight by the logit of the last step's score.
- ``best_of_n``: ours ``strategy=best_of_n, candidates=C x W`` (atomic paths, PRM-ranked); its_hub ``BestOfN`` of C x W
  whole responses (one CoT call each), ranked by the same PRM's ``last`` step score.
- ``self_consistency``: ours ``strategy=majority`` (C x W atomic paths); its_hub ``SelfConsistency`` over C x W whole
  responses, voting on the extracted answer.

The roofline: every policy and PRM request our in-process runs issued is recorded and replayed straight on the same
engines, all at once (no orchestration, no queue, no dependency between steps): that wall time is the floor for the
same work, and ``ours / floor`` is the fraction of the engines' throughput the service reaches.

    ./scripts/install.sh
    .venv-vllm/bin/python benchmarks/peers.py                                  # every strategy, c = 1, 16, 64, T = 1.6
    .venv-vllm/bin/python benchmarks/peers.py --strategies beam --concurrency 16 --blocks 2 --json runs/peers.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from atomthink.prompts import TINY  # noqa: E402
from atomthink.protocol import SamplingParams  # noqa: E402
from atomthink.steps import extract_answer  # noqa: E402
from harness.servers import VLLM_CPU_ENV, RedisServer, ServerProcess, VllmServer, WorkerProcess  # noqa: E402
from research.data.engine import make_problem  # noqa: E402
from research.data.text_dominant import text_question  # noqa: E402

TEXT_POLICY = REPO_ROOT / "models" / "atomthink-tiny-text-policy"
TEXT_PRM = REPO_ROOT / "models" / "atomthink-tiny-text-prm"
"""The default PRM: trained on the text policy's own sampled steps (its card); ``atomthink-tiny-prm``, trained on
the multimodal policy's, ranks this policy's errors no better than chance."""
HELDOUT_SEED = 20261125
FINAL_MARK = "final answer"
"""A step holding this ends a path (``atomthink.steps.is_final`` on the tiny policy's conclusions)."""
ITS_HUB_VERSION = "1.2.0"
STRATEGIES = ("beam", "particle_filtering", "best_of_n", "self_consistency")
OUR_STRATEGY = {"beam": "beam", "best_of_n": "best_of_n", "self_consistency": "majority",
                "particle_filtering": "particle_filter"}  # fmt: skip


@dataclass
class Knobs:
    candidates: int
    beam_width: int
    max_steps: int
    temperature: float
    top_p: float
    top_k: int
    max_step_tokens: int
    max_answer_tokens: int
    adaptive_vote: bool = False
    """Ours only: self-consistency samples in waves and stops once its leader is certain (``adaptive``), with the
    budget as its ceiling; its_hub's ``SelfConsistency`` always samples the whole budget."""
    path_sampling: str = "cot"
    """Ours: how best-of-N and self-consistency sample a path (``path_sampling``): ``steps`` (one policy call per
    atomic step) or ``cot`` (one CoT generation per path, the N of a solve in one call, as its_hub's whole responses
    are sampled from the same CoT prompt)."""
    score_steps: str = "last"
    """Ours: which steps of a best-of-N path the PRM scores (``score_steps``): ``all`` or ``last`` (what its_hub's
    outcome-reward interface asks of the same PRM: the last step's score of each path)."""

    @property
    def budget(self) -> int:
        """Paths per level (beam), particles, or whole paths (best-of-N, self-consistency)."""
        return self.candidates * self.beam_width


@dataclass
class Outcome:
    answer: str | None
    policy_tokens: int
    overhead: float | None = None
    """Ours: the share of the solve's wall time spent neither with a policy nor with a PRM job outstanding, plus the
    time with one of its jobs waiting in the queue (``timings_ms``: total - policy - prm + queue_wall; jobs waiting
    side by side count once) (as in ``vllm_feeding.py``)."""


@dataclass
class Cell:
    side: str
    strategy: str
    concurrency: int
    round: int
    problems: list[int]
    wall_s: float
    latencies_s: list[float]
    policy_tokens: int
    prm_prompt_tokens: float
    right: int
    overhead: float | None = None
    """Ours: the mean ``Outcome.overhead`` of the round's solves (read at concurrency 1: above it, jobs that wait
    side by side make it a queueing measure)."""

    @property
    def n(self) -> int:
        return len(self.problems)

    @property
    def rate(self) -> float:
        return self.n / self.wall_s

    def row(self) -> str:
        low, high = wilson(self.right, self.n)
        return (
            f"| {self.side} | {self.strategy} | {self.concurrency} | {self.round} | {self.rate:.3f} "
            f"| {1000 * percentile(self.latencies_s, 50):.0f} | {1000 * percentile(self.latencies_s, 95):.0f} "
            f"| {self.policy_tokens / self.n:.0f} | {self.prm_prompt_tokens / self.n:.0f} "
            f"| {self.policy_tokens / self.wall_s:.0f} | {self.right}/{self.n} ({100 * low:.0f}-{100 * high:.0f}%) |"
        )


HEADER = (
    "| side | strategy | concurrency | round | solves/s | p50 ms | p95 ms | policy tokens/solve | PRM prompt "
    "tokens/solve | policy tokens/s | right (95% CI) |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def wilson(right: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy."""
    if n == 0:
        return 0.0, 1.0
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def is_right(answer: str | None, i: int) -> bool:
    """Against the value: neither side is shown a multiple-choice problem's options (the question is the text-dominant
    one alone), so an option letter is never the expected form."""
    return answer == str(make_problem(HELDOUT_SEED, i).value_answer)


# --- its_hub's interfaces over our backends (the only glue; its algorithms run unmodified) ----------------------

_solve_tokens: contextvars.ContextVar[list[int]] = contextvars.ContextVar("solve_tokens")


def _steps_of(text: str) -> list[str]:
    return [step.strip() for step in text.split(TINY.step_delimiter or "\n") if step.strip()]


def make_its_hub_adapters(policy: Any, prm: Any, knobs: Knobs) -> tuple[Any, Any, Any]:
    """its_hub's LM, PRM and ORM over ``policy`` (``VllmPolicy``) and ``prm`` (``OpenAICompletionsPrm``)."""
    from its_hub.api import AbstractLanguageModel, AbstractOutcomeRewardModel, AbstractProcessRewardModel

    from workers.backends.base import GenerationRequest, ScoreRequest

    seeds = itertools.count(1_000_003)

    class EngineLM(AbstractLanguageModel):  # type: ignore[misc]
        """A step call (``stop`` given) renders our step prompt over the steps so far (its_hub sends them as an
        assistant turn joined by the step token); a call without ``stop`` is a whole response: our CoT prompt."""

        async def agenerate(self, messages: Any, stop: str | None = None, **kwargs: Any) -> Any:
            batch = bool(messages) and isinstance(messages[0], list)
            conversations = messages if batch else [messages]
            temperature = kwargs.get("temperature")
            temperatures = temperature if isinstance(temperature, list) else [temperature] * len(conversations)
            outs = await asyncio.gather(
                *(self._one(c, stop, t) for c, t in zip(conversations, temperatures, strict=True))
            )
            return outs if batch else outs[0]

        async def agenerate_single(self, messages: Any, stop: str | None = None, **kwargs: Any) -> dict[str, str]:
            return await self._one(messages, stop, kwargs.get("temperature"))

        async def _one(self, messages: Sequence[Any], stop: str | None, temperature: float | None) -> dict[str, str]:
            question = messages[0].content
            steps = _steps_of(messages[1].content) if len(messages) > 1 and messages[1].content else []
            kind: Literal["step", "cot"] = "step" if stop else "cot"
            sampling = SamplingParams(
                n=1,
                temperature=knobs.temperature if temperature is None else temperature,
                top_p=knobs.top_p,
                top_k=knobs.top_k,
                max_new_tokens=knobs.max_step_tokens if kind == "step" else knobs.max_answer_tokens,
                seed=next(seeds),
            )
            [candidate] = await policy.agenerate(GenerationRequest(kind, question, steps, None, sampling))
            tokens = _solve_tokens.get(None)
            if tokens is not None:
                tokens[0] += candidate.num_tokens
            return {"role": "assistant", "content": candidate.text}

    async def last_step_scores(question: str, responses: Sequence[str]) -> list[float]:
        """One score per response, as its_hub asks: the PRM reads each whole path once, up to its last step's tag (the
        earlier steps are marked known, so the completions PRM sends no prompt for them: the least work its_hub's
        interface allows, the same per path as our side's scoring of new steps only)."""
        paths = [_steps_of(r) or [""] for r in responses]
        skip = [[0.0] * (len(path) - 1) for path in paths]
        scores = await prm.ascore(ScoreRequest(question, paths, skip))
        return [path_scores[-1] for path_scores in scores]

    class EnginePRM(AbstractProcessRewardModel):  # type: ignore[misc]
        def score(self, prompt_or_messages: Any, steps: list[str]) -> list[float]:
            raise NotImplementedError("the benchmark runs its_hub's async algorithms")

        async def ascore(self, prompt_or_messages: Any, steps: Any) -> Any:
            question = prompt_or_messages if isinstance(prompt_or_messages, str) else prompt_or_messages[0].content
            single = isinstance(steps, str)
            scores = await last_step_scores(question, [steps] if single else steps)
            return scores[0] if single else scores

    class EngineORM(AbstractOutcomeRewardModel):  # type: ignore[misc]
        def score(self, messages: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the benchmark runs its_hub's async algorithms")

        async def ascore(self, messages: Any, orchestrator: Any = None, **kwargs: Any) -> Any:
            conversations = messages if messages and isinstance(messages[0], list) else [messages]
            scores = await asyncio.gather(
                *(last_step_scores(c[0].content, [c[-1].content or ""]) for c in conversations)
            )
            flat = [s[0] for s in scores]
            return flat if conversations is messages else flat[0]

    return EngineLM(), EnginePRM(), EngineORM()


def its_hub_solver(strategy: str, lm: Any, prm: Any, orm: Any, knobs: Knobs) -> Callable[[int], Awaitable[Outcome]]:
    from its_hub import BestOfN, SelfConsistency, StepGeneration
    from its_hub.core.algorithms.beam_search import BeamSearch
    from its_hub.core.algorithms.particle_gibbs import ParticleFiltering

    # its_hub stops a path once it holds max_steps steps *before* the new one: max_steps - 1 gives S steps at most
    sg = StepGeneration(max_steps=knobs.max_steps - 1, step_token=TINY.step_delimiter, stop_token=FINAL_MARK,
                        temperature=knobs.temperature)  # fmt: skip
    algorithm: Any = {
        "beam": lambda: BeamSearch(sg, prm, beam_width=knobs.beam_width),
        "particle_filtering": lambda: ParticleFiltering(sg, prm),
        "best_of_n": lambda: BestOfN(orm),
        "self_consistency": lambda: SelfConsistency(lambda text: extract_answer(text) or text.strip()),
    }[strategy]()

    async def solve(i: int) -> Outcome:
        tokens = [0]
        _solve_tokens.set(tokens)
        question = text_question(make_problem(HELDOUT_SEED, i))
        response = await algorithm.ainfer(lm, question, budget=knobs.budget)
        return Outcome(extract_answer(response.get("content") or "") or None, tokens[0])

    return solve


# --- ours ---------------------------------------------------------------------------------------------------------


def our_body(strategy: str, i: int, knobs: Knobs) -> dict[str, Any]:
    body: dict[str, Any] = {
        "question": text_question(make_problem(HELDOUT_SEED, i)), "mode": "slow", "strategy": OUR_STRATEGY[strategy],
        "max_steps": knobs.max_steps, "temperature": knobs.temperature, "top_p": knobs.top_p, "top_k": knobs.top_k,
        "seed": i,
    }  # fmt: skip
    if strategy == "beam":
        body.update(candidates=knobs.candidates, beam_width=knobs.beam_width, aggregation="last")
    elif strategy == "particle_filtering":
        body.update(candidates=knobs.budget, aggregation="last")
    elif strategy == "best_of_n":
        body.update(candidates=knobs.budget, aggregation="last", path_sampling=knobs.path_sampling,
                    score_steps=knobs.score_steps)  # fmt: skip
    else:
        body.update(candidates=knobs.budget, adaptive=knobs.adaptive_vote, path_sampling=knobs.path_sampling)
    return body


def outcome_of(response: dict[str, Any]) -> Outcome:
    t = response["timings_ms"]
    overhead = max(0.0, t["total"] - t["policy"] - t["prm"] + t["queue_wall"]) / t["total"] if t["total"] else 0.0
    return Outcome(response.get("answer"), int(response["stats"]["generated_tokens"]), overhead)


# --- driving a round ------------------------------------------------------------------------------------------------


def prm_prompt_tokens(prm_url: str) -> float:
    """``vllm:prompt_tokens_total`` of the PRM server: what both sides had it read."""
    text = httpx.get(prm_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:prompt_tokens_total")
    )


async def run_round(
    side: str, strategy: str, concurrency: int, round_no: int, problems: list[int],
    solve: Callable[[int], Awaitable[Outcome]], prm_url: str,
) -> Cell:  # fmt: skip
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    outcomes: dict[int, Outcome] = {}

    async def one(i: int) -> None:
        async with semaphore:
            started = time.perf_counter()
            outcomes[i] = await solve(i)
            latencies.append(time.perf_counter() - started)

    prm_before = await asyncio.to_thread(prm_prompt_tokens, prm_url)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in problems))
    wall = time.perf_counter() - started
    prm_tokens = await asyncio.to_thread(prm_prompt_tokens, prm_url) - prm_before
    right = sum(is_right(outcomes[i].answer, i) for i in problems)
    tokens = sum(o.policy_tokens for o in outcomes.values())
    shares = [o.overhead for o in outcomes.values() if o.overhead is not None]
    overhead = statistics.mean(shares) if shares else None
    return Cell(side, strategy, concurrency, round_no, problems, wall, latencies, tokens, prm_tokens, right, overhead)


@dataclass
class Recorder:
    """Every policy and PRM request our in-process side issued, for the roofline replay."""

    policy: list[Any] = field(default_factory=list)
    prm: list[Any] = field(default_factory=list)
    on: bool = False

    def wrap(self, policy: Any, prm: Any) -> None:
        generate, score = policy.agenerate, prm.ascore

        async def agenerate(request: Any) -> Any:
            if self.on:
                self.policy.append(request)
            return await generate(request)

        async def ascore(request: Any) -> Any:
            if self.on:
                self.prm.append(request)
            return await score(request)

        policy.agenerate, prm.ascore = agenerate, ascore

    async def replay(self, policy: Any, prm: Any) -> float:
        """The same requests straight on the engines, all at once (both engines busy side by side): the floor's wall
        time."""
        started = time.perf_counter()
        await asyncio.gather(*(policy.agenerate(r) for r in self.policy), *(prm.ascore(r) for r in self.prm))
        return time.perf_counter() - started


@dataclass
class Results:
    """Every round and roofline replay so far, rewritten to ``--json`` after each one (a crash keeps what was
    measured)."""

    knobs: Knobs
    path: Path | None
    cells: list[Cell] = field(default_factory=list)
    floors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, cell: Cell | None = None, floor: dict[str, Any] | None = None) -> None:
        if cell is not None:
            print(cell.row(), flush=True)
            self.cells.append(cell)
        if floor is not None:
            self.floors.append(floor)
        self.save()

    def save(self, summary_lines: Sequence[str] = ()) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"knobs": asdict(self.knobs), "cells": [asdict(c) for c in self.cells], "floors": self.floors,
                   "summary": list(summary_lines)}  # fmt: skip
        self.path.write_text(json.dumps(payload, indent=1) + "\n")


class Problems:
    """Fresh held-out problems for every round (no round reuses another's)."""

    def __init__(self, start: int) -> None:
        self.next = start

    def take(self, n: int) -> list[int]:
        out = list(range(self.next, self.next + n))
        self.next += n
        return out


BLOCK = ("ours", "its_hub", "its_hub", "ours")
"""One block of alternating rounds (drift in the machine's speed falls on both sides alike)."""
BESIDE = " (beside Redis)"
"""Marks its_hub's rounds that alternate with ours through Redis (the ratio of the Redis side reads these)."""


def engine_settings(args: argparse.Namespace, knobs: Knobs, prm_url: str) -> Any:
    """The settings of the in-process side: the policy engine in this process, the PRM server at ``prm_url``."""
    from atomthink.settings import Settings

    return Settings(
        policy_backend="vllm", policy_model=str(TEXT_POLICY), dtype="float32", vllm_max_model_len=1024,
        vllm_enforce_eager=True, vllm_enable_chunked_prefill=False, vllm_enable_prefix_caching=True,
        prm_backend="openai-completions", prm_base_url=prm_url, prm_model=str(args.prm_model), job_timeout_s=900,
        engine_feeding="continuous", policy_max_inflight=256, prm_max_inflight=256,
        prm_merge_duplicate_paths=args.merge == "on", max_answer_tokens=knobs.max_answer_tokens,
    )  # fmt: skip


async def open_engines(settings: Any, cores: str) -> tuple[Any, Any]:
    """The in-process policy engine (pinned to ``cores``) and a client of the PRM server."""
    from workers.backends.openai_prm import OpenAICompletionsPrm
    from workers.backends.vllm_policy import VllmPolicy

    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cores
    policy = await asyncio.to_thread(VllmPolicy.from_settings, settings)
    prm = await asyncio.to_thread(OpenAICompletionsPrm.from_settings, settings)
    return policy, prm


async def inprocess_rounds(
    args: argparse.Namespace, knobs: Knobs, prm_url: str, problems: Problems, results: Results
) -> None:
    from atomthink_serve.embedded import build_runtime
    from service.schemas import SolveParams

    settings = engine_settings(args, knobs, prm_url)
    policy, prm = await open_engines(settings, args.policy_cores)
    recorder = Recorder()
    recorder.wrap(policy, prm)
    lm, its_prm, its_orm = make_its_hub_adapters(policy, prm, knobs)
    try:
        async with build_runtime(settings, policy=policy, prm=prm) as runtime:

            async def ours(strategy: str) -> Callable[[int], Awaitable[Outcome]]:
                async def solve(i: int) -> Outcome:
                    response = await runtime.solve(SolveParams(**our_body(strategy, i, knobs)))
                    return outcome_of(response.model_dump(mode="json"))

                return solve

            for strategy in args.strategies:
                peer = its_hub_solver(strategy, lm, its_prm, its_orm, knobs)
                mine = await ours(strategy) if strategy in OUR_STRATEGY else None
                await peer(10**6)  # warm-up, off the problem sets
                if mine:
                    await mine(10**6)
                for concurrency in args.concurrency:
                    n = max(args.min_problems, args.waves * concurrency)
                    for block in range(args.blocks):
                        order = BLOCK if mine else BLOCK[1:3]
                        for k, side in enumerate(order):
                            round_no = block * len(order) + k + 1
                            recorder.on, recorder.policy, recorder.prm = True, [], []
                            cell = await run_round(f"{side} (in process)" if side == "ours" else "its_hub " +
                                                   ITS_HUB_VERSION, strategy, concurrency, round_no,
                                                   problems.take(n), mine if side == "ours" and mine else peer,
                                                   prm_url)  # fmt: skip
                            recorder.on = False
                            results.add(cell)
                            if args.roofline:
                                floor_s = await recorder.replay(policy, prm)
                                results.add(floor={"side": side, "strategy": strategy, "concurrency": concurrency,
                                               "round": round_no, "ours_s": cell.wall_s, "floor_s": floor_s,
                                               "solves": cell.n, "policy_requests": len(recorder.policy),
                                               "prm_requests": len(recorder.prm)})  # fmt: skip
                                print(f"  roofline ({side}): the same {len(recorder.policy)} policy and "
                                      f"{len(recorder.prm)} PRM requests replayed at once: {floor_s:.1f} s against "
                                      f"{cell.wall_s:.1f} s ({100 * floor_s / cell.wall_s:.0f}% of the floor's "
                                      "throughput)", flush=True)  # fmt: skip
    finally:
        policy.close()
        prm.close()


def wait_ready(gateway: ServerProcess, workers: list[WorkerProcess], logdir: Path) -> None:
    deadline = time.monotonic() + 900
    while httpx.get(gateway.url + "/readyz", timeout=5).json().get("workers") != {"policy": 1, "prm": 1}:
        if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
            raise RuntimeError(f"workers did not start; logs in {logdir}")
        time.sleep(1)


async def headroom(args: argparse.Namespace, knobs: Knobs, prm_url: str) -> list[str]:
    """Room for search at the benchmark's temperature: QuickThink against our beam search (and greedy CoT) on the
    first ``--headroom`` held-out problems, in process on the same engines."""
    from atomthink.settings import Settings
    from atomthink_serve.embedded import build_runtime
    from service.schemas import SolveParams

    settings = Settings(policy_backend="vllm", policy_model=str(TEXT_POLICY), dtype="float32", vllm_max_model_len=1024,
                        vllm_enforce_eager=True, vllm_enable_chunked_prefill=False, prm_backend="openai-completions",
                        prm_base_url=prm_url, prm_model=str(args.prm_model), job_timeout_s=900, policy_max_inflight=256,
                        prm_max_inflight=256)  # fmt: skip
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.policy_cores
    modes = {
        "cot, greedy": {"mode": "cot", "temperature": 0.0},
        f"quick, T = {knobs.temperature:g}": {"mode": "quick", "temperature": knobs.temperature, "top_p": knobs.top_p,
                                              "top_k": knobs.top_k, "max_steps": knobs.max_steps},
        **{f"beam {knobs.candidates} x {knobs.beam_width}, T = {knobs.temperature:g}, {how}": {
            **{k: v for k, v in our_body("beam", 0, knobs).items() if k not in ("question", "seed")},
            "aggregation": how} for how in ("last", "min")},
        f"best-of-{knobs.budget}, T = {knobs.temperature:g}, min": {
            **{k: v for k, v in our_body("best_of_n", 0, knobs).items() if k not in ("question", "seed")},
            "aggregation": "min"},
        f"majority of {knobs.budget}, T = {knobs.temperature:g}": {
            k: v for k, v in our_body("self_consistency", 0, knobs).items() if k not in ("question", "seed")},
    }  # fmt: skip
    modes = {name: fields for name, fields in modes.items() if name.startswith(tuple(args.headroom_modes))}
    lines = [f"## Headroom: held-out problems 0-{args.headroom - 1} (seed {HELDOUT_SEED})"]
    async with build_runtime(settings) as runtime:
        semaphore = asyncio.Semaphore(32)

        async def right(i: int, fields: dict[str, Any]) -> bool:
            problem = make_problem(HELDOUT_SEED, i)
            async with semaphore:
                response = await runtime.solve(SolveParams(question=text_question(problem), seed=i, **fields))
            return is_right(response.answer, i)

        for name, fields in modes.items():
            hits = sum(await asyncio.gather(*(right(i, fields) for i in range(args.headroom))))
            low, high = wilson(hits, args.headroom)
            lines.append(f"- {name}: {hits}/{args.headroom} = {100 * hits / args.headroom:.1f}% "
                         f"(95% CI {100 * low:.1f}-{100 * high:.1f}%)")  # fmt: skip
            print(lines[-1], flush=True)
    return lines


async def redis_rounds(
    args: argparse.Namespace, knobs: Knobs, prm_url: str, problems: Problems, logdir: Path, results: Results
) -> None:
    """Ours through the gateway and Redis workers (one policy worker process with its own engine, one PRM worker),
    in alternating rounds with its_hub on an in-process engine of the same checkpoint, settings and core (the worker's
    engine lives in another process: its_hub cannot drive it)."""
    python = REPO_ROOT / ".venv-vllm" / "bin" / "python"
    policy, prm = await open_engines(engine_settings(args, knobs, prm_url), args.policy_cores)
    lm, its_prm, its_orm = make_its_hub_adapters(policy, prm, knobs)
    with RedisServer(logdir) as redis:
        env = {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": redis.url, "ATOMTHINK_KEY_PREFIX": "peers",
               "ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(args.prm_model),
               "ATOMTHINK_JOB_TIMEOUT_S": "900", "ATOMTHINK_PRM_BACKEND": "openai-completions",
               "ATOMTHINK_PRM_BASE_URL": prm_url, "ATOMTHINK_POLICY_MAX_INFLIGHT": "256",
               "ATOMTHINK_PRM_MAX_INFLIGHT": "256", "ATOMTHINK_MAX_ANSWER_TOKENS": str(knobs.max_answer_tokens),
               "ATOMTHINK_PRM_MERGE_DUPLICATE_PATHS": str(args.merge == "on").lower()}  # fmt: skip
        engine = {
            **env,
            **VLLM_CPU_ENV,
            "ATOMTHINK_POLICY_BACKEND": "vllm",
            "ATOMTHINK_DTYPE": "float32",
            "ATOMTHINK_VLLM_MAX_MODEL_LEN": "1024",
            "ATOMTHINK_VLLM_ENFORCE_EAGER": "true",
            "ATOMTHINK_VLLM_ENABLE_CHUNKED_PREFILL": "false",
            "VLLM_CPU_OMP_THREADS_BIND": args.policy_cores,
        }
        workers = [WorkerProcess("policy", engine, logdir / "policy.log", python=python),
                   WorkerProcess("prm", env, logdir / "prm.log", python=python)]  # fmt: skip
        try:
            with ServerProcess(["gateway"], env, log_path=logdir / "gateway.log",
                               program=(str(python), "-m", "atomthink_serve.cli")) as gateway:  # fmt: skip
                await asyncio.to_thread(wait_ready, gateway, workers, logdir)
                async with httpx.AsyncClient(timeout=1800) as client:
                    for strategy in [s for s in args.strategies if s in OUR_STRATEGY]:

                        async def solve(i: int, strategy: str = strategy) -> Outcome:
                            response = await client.post(gateway.url + "/solve", json=our_body(strategy, i, knobs))
                            response.raise_for_status()
                            return outcome_of(response.json())

                        peer = its_hub_solver(strategy, lm, its_prm, its_orm, knobs)
                        await solve(10**6)
                        await peer(10**6)
                        for concurrency in args.concurrency:
                            n = max(args.min_problems, args.waves * concurrency)
                            for block in range(args.blocks):
                                for k, side in enumerate(BLOCK):
                                    name = "ours (Redis)" if side == "ours" else f"its_hub {ITS_HUB_VERSION}{BESIDE}"
                                    cell = await run_round(name, strategy, concurrency, len(BLOCK) * block + k + 1,
                                                           problems.take(n), solve if side == "ours" else peer,
                                                           prm_url)  # fmt: skip
                                    results.add(cell)
        finally:
            for worker in workers:
                worker.terminate()
            policy.close()
            prm.close()


def summary(cells: list[Cell], floors: list[dict[str, Any]]) -> list[str]:
    """Ours / its_hub per strategy and concurrency: the ratio of the mean rates, and the spread of round pairs."""
    lines = ["", "## Ours / its_hub (solves/s; the spread is over adjacent round pairs)"]
    keys = sorted({(c.strategy, c.concurrency) for c in cells})
    for strategy, concurrency in keys:
        group = [c for c in cells if (c.strategy, c.concurrency) == (strategy, concurrency)]
        for side in ("ours (in process)", "ours (Redis)"):
            beside = side == "ours (Redis)" and any(c.side.endswith(BESIDE) for c in group)
            peers = [c for c in group if c.side.startswith("its_hub") and c.side.endswith(BESIDE) == beside]
            peer = [c.rate for c in peers]
            mine = [c.rate for c in group if c.side == side]
            if mine and peer:
                ratio = statistics.mean(mine) / statistics.mean(peer)
                pairs = [m / p for m, p in zip(mine, peer, strict=False)]
                acc_m = sum(c.right for c in group if c.side == side) / sum(c.n for c in group if c.side == side)
                acc_p = sum(c.right for c in peers) / sum(c.n for c in peers)
                lines.append(f"- {strategy}, c={concurrency}, {side}: {ratio:.2f}x (pairs {min(pairs):.2f}-"
                             f"{max(pairs):.2f}x); accuracy {100 * acc_m:.0f}% vs {100 * acc_p:.0f}%")  # fmt: skip
    for strategy, concurrency in keys:
        cell_floors = [f for f in floors if (f["strategy"], f["concurrency"]) == (strategy, concurrency)]
        for side in ("ours", "its_hub"):
            replays = [f for f in cell_floors if f.get("side", "ours") == side]
            if replays:
                share = statistics.mean(f["floor_s"] / f["ours_s"] for f in replays)
                lines.append(f"- roofline, {strategy}, c={concurrency}: {side} reaches {100 * share:.0f}% of the "
                             "floor's throughput for its own requests")  # fmt: skip
        ours_floor = [f["solves"] / f["floor_s"] for f in cell_floors if f.get("side", "ours") == "ours" and "solves"
                      in f]  # fmt: skip
        peer_floor = [f["solves"] / f["floor_s"] for f in cell_floors if f.get("side") == "its_hub"]
        peer_rate = [c.rate for c in cells if (c.strategy, c.concurrency) == (strategy, concurrency)
                     and c.side.startswith("its_hub") and not c.side.endswith(BESIDE)]  # fmt: skip
        if ours_floor and peer_floor and peer_rate and concurrency > 1:  # at c = 1 the floor ignores the search's order
            lines.append(f"- bound, {strategy}, c={concurrency}: ours replayed at its floor would be "
                         f"{statistics.mean(ours_floor) / statistics.mean(peer_rate):.2f}x its_hub as measured; the "
                         f"two floors (the work alone, no orchestration on either side): "
                         f"{statistics.mean(ours_floor) / statistics.mean(peer_floor):.2f}x")  # fmt: skip
    for side in ("ours (in process)", "ours (Redis)"):
        for strategy, concurrency in keys:
            shares = [c.overhead for c in cells if (c.side, c.strategy, c.concurrency) == (side, strategy, concurrency)
                      and c.overhead is not None]  # fmt: skip
            if shares and concurrency == 1:
                lines.append(f"- queue + orchestration, {side}, {strategy}, c=1: {100 * statistics.mean(shares):.1f}% "
                             "of wall time")  # fmt: skip
    print("\n".join(lines), flush=True)
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--paths", default="inprocess,redis")
    parser.add_argument("--blocks", type=int, default=2, help="blocks of rounds ours, peer, peer, ours")
    parser.add_argument("--waves", type=int, default=2, help="problems per round = waves x concurrency ...")
    parser.add_argument("--min-problems", type=int, default=8, help="... but at least this many")
    parser.add_argument("--first-problem", type=int, default=2000, help="held-out index of the first round's first")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--beam-width", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument(
        "--temperature", type=float, default=1.6, help="the multimodal tiny models' evaluation temperature"
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass, both sides (default 1.0: off)")
    parser.add_argument("--top-k", type=int, default=0, help="top-k cut, both sides (default 0: off)")
    parser.add_argument("--prm-model", type=Path, default=TEXT_PRM,
                        help="PRM checkpoint served to both sides (default: the text policy's own PRM)")  # fmt: skip
    parser.add_argument("--no-roofline", dest="roofline", action="store_false")
    parser.add_argument("--merge", choices=("on", "off"), default="on",
                        help="ours: score identical paths once per PRM job")  # fmt: skip
    parser.add_argument(
        "--adaptive-vote",
        action="store_true",
        help="ours: self-consistency stops sampling once its leader is certain (the budget a ceiling)",
    )
    parser.add_argument("--path-sampling", choices=("steps", "cot"), default="cot",
                        help="ours: best-of-N and self-consistency sample atomic steps or whole CoT paths (default, "
                        "as its_hub samples whole responses)")  # fmt: skip
    parser.add_argument("--score-steps", choices=("all", "last"), default="last",
                        help="ours: best-of-N scores every step of a path or its last only (as its_hub)")  # fmt: skip
    parser.add_argument("--prm-cores", default="0", help="VLLM_CPU_OMP_THREADS_BIND of the PRM server")
    parser.add_argument("--policy-cores", default="1", help="... and of the policy engine")
    parser.add_argument("--json", type=Path, help="write every cell and floor here")
    parser.add_argument("--headroom", type=int, default=0, help="only measure greedy CoT, QuickThink and beam on the "
                        "first N held-out problems (the text policy's room for search), then stop")  # fmt: skip
    parser.add_argument("--headroom-modes", default="cot,quick,beam,best-of,majority",
                        help="which headroom rows to run (prefixes of their names)")  # fmt: skip
    parser.add_argument(
        "--report",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="PNG JSON [JSON ...]: print the table and summary of --json files, plot them to PNG, stop (no engine)",
    )
    args = parser.parse_args()
    if args.report:
        report(args.report[0], args.report[1:])
        return
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.headroom_modes = args.headroom_modes.split(",")
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; known: {', '.join(STRATEGIES)}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    knobs = Knobs(args.candidates, args.beam_width, args.max_steps, args.temperature, args.top_p, args.top_k,
                  TINY.step_max_tokens, 256, args.adaptive_vote, args.path_sampling,
                  args.score_steps)  # fmt: skip
    os.environ.update(VLLM_CPU_ENV)
    print(f"# peers benchmark: {os.cpu_count()} CPUs, policy {TEXT_POLICY.name}, PRM {args.prm_model.name}, its_hub "
          f"{_its_hub_version()}; {asdict(knobs)}; ours merges duplicate paths: {args.merge}")  # fmt: skip
    print(HEADER)
    problems = Problems(args.first_problem)
    results = Results(knobs, args.json)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.prm_cores
    with (
        tempfile.TemporaryDirectory() as tmp,
        VllmServer(args.prm_model, "prm", log_path=Path(tmp) / "prm.log") as server,
    ):
        prm_url = server.url + "/v1"
        if args.headroom:
            await headroom(args, knobs, prm_url)
            return
        if "inprocess" in args.paths:
            await inprocess_rounds(args, knobs, prm_url, problems, results)
        if "redis" in args.paths:
            await redis_rounds(args, knobs, prm_url, problems, Path(tmp), results)
    results.save(summary(results.cells, results.floors))


PATH_KNOBS = {"path_sampling": ("best_of_n", "self_consistency"), "score_steps": ("best_of_n",),
              "adaptive_vote": ("self_consistency",)}  # fmt: skip
"""Knobs that shape only some strategies: a file that ran none of them may differ in them."""


def applicable_knobs(payload: dict[str, Any]) -> dict[str, Any]:
    """A ``--json`` file's knobs without those that none of its strategies reads."""
    ran = {c["strategy"] for c in payload["cells"]}
    return {k: v for k, v in payload["knobs"].items() if not set(PATH_KNOBS.get(k, ran)).isdisjoint(ran)}


def report(out: Path, paths: Sequence[Path]) -> None:
    """The table (every round), the summary and a plot (solves/s per strategy and concurrency, each side, every round
    as a dot) from one or more ``--json`` files: ``docs/peers.md`` and ``docs/peers.png`` are made this way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    payloads = [json.loads(path.read_text()) for path in paths]
    cells = [Cell(**c) for payload in payloads for c in payload["cells"]]
    print(HEADER)
    for cell in cells:
        print(cell.row())
    summary(cells, [f for payload in payloads for f in payload["floors"]])
    merged: dict[str, Any] = {}
    for payload in payloads:
        for key, value in applicable_knobs(payload).items():
            if merged.setdefault(key, value) != value:
                raise SystemExit(f"the files were run with different {key}: {merged[key]!r} and {value!r}")
    strategies = sorted({c.strategy for c in cells}, key=STRATEGIES.index)
    sides = sorted({c.side for c in cells})
    fig, axes = plt.subplots(1, len(strategies), figsize=(4 * len(strategies), 3.6), squeeze=False)
    for ax, strategy in zip(axes[0], strategies, strict=True):
        for k, side in enumerate(sides):
            mine = [c for c in cells if c.strategy == strategy and c.side == side]
            if not mine:
                continue
            levels = sorted({c.concurrency for c in mine})
            means = [statistics.mean(c.rate for c in mine if c.concurrency == x) for x in levels]
            ax.plot(levels, means, marker="o", label=side, color=f"C{k}")
            ax.scatter([c.concurrency for c in mine], [c.rate for c in mine], s=10, color=f"C{k}", alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_title(strategy)
        ax.set_xlabel("concurrency")
        ax.set_ylabel("solves/s")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"ours vs its_hub {ITS_HUB_VERSION} on one vLLM CPU engine pair ({json.dumps(merged)})", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


def _its_hub_version() -> str:
    from importlib.metadata import version

    found = version("its_hub")
    if found != ITS_HUB_VERSION:
        print(f"# warning: its_hub {found} installed, the benchmark was written against {ITS_HUB_VERSION}")
    return found


if __name__ == "__main__":
    asyncio.run(main())
