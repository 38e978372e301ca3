"""Runs one solve request: stores the image, picks the strategy, enforces the deadline, builds the response."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from atomthink.errors import AtomThinkError, ContextTooLong
from atomthink.prompts import PromptPreset, format_question, resolve_prompt_preset
from atomthink.protocol import PromptKind, SamplingParams, new_id
from atomthink.queue.base import JobClient
from atomthink.settings import Settings
from atomthink.steps import get_step_rules
from service import metrics
from service.events import EventSink
from service.orchestrator.expander import ExpansionStats, QueueExpander, RequestSampling, union_s
from service.orchestrator.strategies import base
from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander
from service.orchestrator.tree import SearchTree
from service.schemas import SolveParams, SolveResponse, Stats, Step, Timings, TreeNode

log = logging.getLogger(__name__)


class PromptLimits(Protocol):
    """Checks a request's first prompt against the models' context windows before any job is sent."""

    def check(self, kind: PromptKind, question: str, has_image: bool, sampling: SamplingParams, scored: bool) -> None:
        """``ContextTooLong`` (400, naming the limit) when the prompt with its token budget cannot fit."""
        ...


class Solver:
    """The orchestrator's entry point; knows the queue interface, never a concrete queue or model."""

    def __init__(
        self,
        client: JobClient,
        settings: Settings,
        preset: PromptPreset | None = None,
        limits: PromptLimits | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.preset = preset or resolve_prompt_preset(settings.prompt_preset, settings.policy_model)
        """The policy's prompt preset: its step rules, step budget and search defaults shape every search."""
        self.rules = get_step_rules(self.preset.step_rules)
        self.limits = limits
        """Context windows the first prompt is checked against (None: only the workers check)."""

    async def solve(
        self, params: SolveParams, image: bytes | None = None, sink: EventSink | None = None
    ) -> SolveResponse:
        """Run one request; ``sink`` receives the search events as they happen (streamed responses)."""
        strategy_label = params.resolved_strategy or "none"
        started = time.perf_counter()
        status = "error"
        metrics.IN_FLIGHT.inc()
        try:
            response = await self._solve(params, image, sink)
            status = "truncated" if response.truncated else "ok"
            return response
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except AtomThinkError as exc:
            status = exc.code
            raise
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.SOLVE_REQUESTS.labels(params.mode, strategy_label, status).inc()
            if status in ("ok", "truncated"):
                metrics.SOLVE_LATENCY.labels(
                    params.mode, strategy_label, metrics.candidate_bucket(params.resolved_candidates)
                ).observe(time.perf_counter() - started)

    async def _solve(self, params: SolveParams, image: bytes | None, sink: EventSink | None) -> SolveResponse:
        started = time.perf_counter()
        request_id = new_id()
        settings = self.settings
        question = format_question(params.question, params.choices)
        if self.limits is not None:  # tokenizes the whole first prompt: off the event loop
            await asyncio.to_thread(self._check_first_prompt, params, question, image is not None)
        image_id = await self.client.put_image(image) if image is not None else None
        seed = params.seed if params.seed is not None else random.randrange(2**31 - 1)
        expander = QueueExpander(
            self.client,
            request_id=request_id,
            question=question,
            image_id=image_id,
            sampling=RequestSampling(
                temperature=_first(params.temperature, settings.temperature, self.preset.sampling.temperature),
                top_p=_first(params.top_p, settings.top_p, self.preset.sampling.top_p),
                top_k=_first(params.top_k, settings.top_k, self.preset.sampling.top_k),
                max_step_tokens=settings.max_step_tokens or self.preset.step_max_tokens,
                max_answer_tokens=settings.max_answer_tokens,
            ),
            seed=seed,
            job_timeout_s=settings.job_timeout_s,
            prompt_preset=self.preset.name,
            merge_duplicate_paths=settings.prm_merge_duplicate_paths,
        )
        context = SearchContext(
            max_steps=params.max_steps,
            temperature=expander.sampling.temperature,
            choices=tuple(params.choices or ()),
            max_retries=settings.quick_max_retries,
            retry_temperature_step=settings.quick_retry_temperature_step,
            preset=self.preset.search,
            seed=seed,
            top_logprobs=settings.top_logprobs,
        )
        tree = SearchTree(rules=self.rules, sink=sink)
        budget_s = settings.request_timeout_s
        if params.deadline_ms is not None:
            budget_s = min(budget_s, params.deadline_ms / 1000)
        budgeted = base.TokenBudget(expander, params.max_thinking_tokens)
        truncated = False
        completed = False
        try:
            async with asyncio.timeout(budget_s):
                search = self._run_strategy(params, budgeted, tree, context)
                outcome, truncated = await base.within_budget(search, tree, context)
            completed = not truncated
        except TimeoutError:
            truncated = True
            outcome = base.best_so_far(tree, context)
        except ContextTooLong:
            if not tree.nodes:  # the first prompt itself cannot fit: the request is refused (400)
                raise
            truncated = True  # the history outgrew a context window: stop with the best path so far
            outcome = base.best_so_far(tree, context)
        finally:
            if not completed:  # a finished strategy awaited every job it sent: nothing is left to cancel
                await self.client.cancel(request_id)
        response = _response(request_id, params, outcome, tree, expander, truncated, started)
        metrics.observe_spend(params.mode, params.resolved_strategy, params.resolved_candidates, response.stats)
        metrics.EXPANDED_NODES.labels(params.mode, params.resolved_strategy or "none").observe(len(tree.nodes))
        return response

    def _check_first_prompt(self, params: SolveParams, question: str, has_image: bool) -> None:
        assert self.limits is not None
        one_shot = params.mode in ("direct", "cot")
        step_tokens = self.settings.max_step_tokens or self.preset.step_max_tokens
        budget = self.settings.max_answer_tokens if one_shot else step_tokens
        sampling = SamplingParams(max_new_tokens=budget, min_new_tokens=min(step_tokens, budget) if one_shot else None)
        kind: PromptKind = "direct" if params.mode == "direct" else "cot" if params.mode == "cot" else "step"
        strategy = params.search_strategy
        self.limits.check(kind, question, has_image, sampling, scored=strategy is not None and strategy.uses_prm)

    async def _run_strategy(
        self, params: SolveParams, expander: StepExpander, tree: SearchTree, context: SearchContext
    ) -> SearchOutcome:
        """The registered strategy of the request's mode and strategy, or one generation (direct, cot)."""
        strategy = params.search_strategy
        if strategy is None:
            assert params.mode in ("direct", "cot")
            return await base.one_shot(expander, tree, context, params.mode)
        return await strategy.run(expander, tree, context, params.search)


def _first(*values: Any) -> Any:
    """The first value that is set (request, then settings, then the prompt preset)."""
    return next(v for v in values if v is not None)


def _response(
    request_id: str,
    params: SolveParams,
    outcome: SearchOutcome,
    tree: SearchTree,
    expander: QueueExpander,
    truncated: bool,
    started: float,
) -> SolveResponse:
    stats = expander.stats
    path = outcome.leaf.path()
    scores = outcome.leaf.path_scores or []
    scored = range(outcome.leaf.stand_ins, len(scores))  # stand-ins of a last-step-only path are no scores
    steps = [Step(text=node.text, score=scores[i] if i in scored else None) for i, node in enumerate(path)]
    return SolveResponse(
        id=request_id,
        answer=outcome.answer,
        final=outcome.final,
        steps=steps,
        mode=params.mode,
        strategy=params.resolved_strategy,
        aggregation=params.resolved_aggregation,
        votes=outcome.votes,
        vote_weights=outcome.vote_weights,
        stats=_stats(params, outcome, tree, stats),
        timings_ms=Timings(
            total=round((time.perf_counter() - started) * 1000, 3),
            policy=round(stats.policy_clock.total_s * 1000, 3),
            prm=round(stats.prm_clock.total_s * 1000, 3),
            queue=round(stats.queue_s * 1000, 3),
            queue_wall=round(union_s(stats.queue_waits) * 1000, 3),
        ),
        truncated=truncated,
        tree=[
            TreeNode(
                id=n.id,
                parent=n.parent.id if n.parent is not None and n.parent.parent is not None else None,
                text=n.text,
                depth=n.depth,
                score=n.score,
                final=n.final,
                invalid=n.invalid,
            )
            for n in tree.nodes
        ]
        if params.return_tree
        else None,
    )


def _stats(params: SolveParams, outcome: SearchOutcome, tree: SearchTree, stats: ExpansionStats) -> Stats:
    """Calls and tokens spent; for path-level strategies also paths spent and saved against the ceiling."""
    spent = Stats(
        policy_calls=stats.policy_calls,
        prm_calls=stats.prm_calls,
        generated_tokens=stats.generated_tokens,
        prompt_tokens=stats.prompt_tokens,
        expanded_nodes=len(tree.nodes),
    )
    if outcome.paths is None:
        return spent
    ceiling = params.resolved_candidates
    tokens_per_step = stats.generated_tokens / max(1, len(tree.nodes))
    return spent.model_copy(
        update={
            "paths": outcome.paths,
            "paths_ceiling": ceiling,
            "paths_saved": max(0, ceiling - outcome.paths),
            "paths_pruned": outcome.pruned,
            "tokens_saved": round(outcome.steps_saved * tokens_per_step),
            "stop_reason": outcome.stop_reason,
        }
    )
