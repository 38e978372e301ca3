"""Path-level strategies read from saved paths, so that every N and every selection rule sees the same samples.

The AtomThink paper measures best-of-N and the votes at N = 1 ... 16 on one set of sampled paths per problem;
``atomthink eval --paths DIR`` does the same with the service's own code. The first path-level solve of a problem
records ``n`` whole paths through the live service (``record_search``: the jobs a path-level strategy sends, one
policy job for the ``n`` first steps and then one per open path and step, each with its tokens' log-probabilities),
the PRM's score of every step of every path, and a fallback answer for every unfinished path. Every path-level solve
of that problem then runs the service's ``Solver`` and registered strategy unchanged over ``ReplayClient``, a
``JobClient`` that answers from the record: the k-th path a strategy opens is the k-th saved path, so N = 4 reads
paths 1-4 and N = 16 all sixteen, a wave of DeepConf online or of an adaptive vote the next unopened ones. Token
counts, PRM calls and answers are those of the live jobs; latency is not (a replayed solve waits for no model).

Step-level strategies (beam, greedy, particle filtering, DVTS) and QuickThink sample afresh through the live service:
their jobs depend on which candidates survive, so no saved set of paths can answer them.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from pydantic import BaseModel, ConfigDict

from atomthink.errors import AtomThinkError
from atomthink.protocol import (
    Candidate,
    Job,
    JobError,
    PolicyJob,
    PolicyResult,
    PrmJob,
    PrmResult,
    Result,
    Role,
    failed_result,
)
from atomthink.queue.base import JobClient, QueueStats
from atomthink.settings import Settings
from research.eval.runner import RuntimeSolveClient, SolveRequestError
from service.orchestrator.solver import Solver
from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    fallback_answer,
    score_nodes,
)
from service.orchestrator.strategies.confident_paths import ConfidenceBook, confident_rollouts
from service.orchestrator.tree import SearchTree
from service.schemas import SolveParams, SolveResponse

DEFAULT_PATHS = 16
RECORD_VERSION = 1


class SavedPaths(BaseModel):
    """One problem's recorded paths: per path its steps' candidates (log-probabilities included) and the PRM's
    score of each step, and the fallback answer of each unfinished path (by its steps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = RECORD_VERSION
    key: dict[str, Any]
    """What the paths were sampled for (question, image, seed, sampling, models): the record's file name hashes it."""
    paths: list[list[Candidate]]
    scores: list[list[float]]
    finals: list[tuple[list[str], Candidate]]

    def texts(self, i: int) -> list[str]:
        return [c.text for c in self.paths[i]]


class _OverLiveQueue:
    """A ``JobClient`` over the live queue: everything but ``call`` goes to it (images too: the live fallback jobs of a
    replay read them)."""

    def __init__(self, live: JobClient) -> None:
        self.live = live

    async def cancel(self, request_id: str) -> None:
        await self.live.cancel(request_id)

    async def put_image(self, data: bytes) -> str:
        return await self.live.put_image(data)

    async def workers_alive(self) -> dict[Role, int]:
        return await self.live.workers_alive()

    async def queue_stats(self) -> dict[Role, QueueStats]:
        return await self.live.queue_stats()


class RecordingClient(_OverLiveQueue):
    """A ``JobClient`` that passes every job to the live queue and keeps each job with its result, in call order."""

    def __init__(self, live: JobClient) -> None:
        super().__init__(live)
        self.calls: list[tuple[Job, Result | None]] = []

    @overload
    async def call(self, job: PolicyJob, timeout_s: float) -> PolicyResult: ...
    @overload
    async def call(self, job: PrmJob, timeout_s: float) -> PrmResult: ...
    async def call(self, job: Job, timeout_s: float) -> Result:
        slot = len(self.calls)
        self.calls.append((job, None))  # call order, not completion order: the order the strategy asked in
        result: Result = await self.live.call(job, timeout_s)  # type: ignore[arg-type]
        self.calls[slot] = (job, result)
        return result


async def record_search(expander: StepExpander, tree: SearchTree, context: SearchContext, n: int) -> SearchOutcome:
    """Sample ``n`` whole paths as the confidence strategies do (log-probabilities on), score every step of every
    path in one PRM call, and ask for the fallback answer of each unfinished path."""
    book = ConfidenceBook()
    leaves, _ = await confident_rollouts(expander, tree, context, book, n, context.top_logprobs)
    await score_nodes(expander, tree, leaves)
    await asyncio.gather(*(fallback_answer(expander, leaf, context) for leaf in leaves if not leaf.final))
    return SearchOutcome(leaves[0], None, final=False)


class _RecordingSolver(Solver):
    """The service's solver (sampling, seeds, budgets as a request gets them) running ``record_search``."""

    def __init__(self, client: JobClient, settings: Settings, n: int) -> None:
        super().__init__(client, settings)
        self.n = n

    async def _run_strategy(
        self, params: SolveParams, expander: StepExpander, tree: SearchTree, context: SearchContext
    ) -> SearchOutcome:
        return await record_search(expander, tree, context, self.n)


def paths_from_calls(calls: Sequence[tuple[Job, Result | None]], key: dict[str, Any]) -> SavedPaths:
    """The record of one ``record_search`` run from its jobs and results. A path's next step is the job whose steps
    are its texts; among equal paths the first open one takes it (the order the strategy asked in)."""
    paths: list[list[Candidate]] = []
    finals: list[tuple[list[str], Candidate]] = []
    scored: dict[tuple[str, ...], list[float]] = {}
    for job, result in calls:
        if result is None or result.error is not None:
            raise SolveRequestError(f"recording failed: {result.error if result else 'no result'}", transient=True)
        if isinstance(job, PrmJob):
            assert isinstance(result, PrmResult)
            scored.update((tuple(path), scores) for path, scores in zip(job.paths, result.scores, strict=True))
            continue
        assert isinstance(result, PolicyResult)
        if job.kind == "final":
            finals.append((list(job.steps), result.candidates[0]))
        elif not job.steps:
            paths += [[candidate] for candidate in result.candidates]
        else:
            waiting = (i for i, p in enumerate(paths) if len(p) == len(job.steps) and [c.text for c in p] == job.steps)
            i = next(waiting, -1)
            if i < 0:
                raise SolveRequestError("recording: a step job continues no recorded path", transient=False)
            paths[i].append(result.candidates[0])
    scores = [scored[tuple(c.text for c in path)] for path in paths]
    return SavedPaths(key=key, paths=paths, scores=scores, finals=finals)


class ReplayClient(_OverLiveQueue):
    """A ``JobClient`` that answers one request's path-level jobs from a record.

    A policy job for the first step opens the next ``n`` unopened saved paths; a job for a later step continues the
    first open path with those steps; a PRM job reads the saved score of each step (a step's score depends only on
    the question and the steps up to it); a fallback answer is the saved one, or asked of the live queue when the
    path was cut where the record has none (DeepConf online's stopped paths). Anything else is a typed failure: the
    record cannot answer it.
    """

    def __init__(self, record: SavedPaths, live: JobClient) -> None:
        super().__init__(live)
        self.record = record
        self.opened = 0
        self.open: dict[tuple[str, ...], deque[int]] = defaultdict(deque)
        self.step_score = {
            tuple(record.texts(i)[: d + 1]): score for i, scores in enumerate(record.scores) for d, score in
            enumerate(scores)
        }  # fmt: skip
        self.finals = {tuple(steps): candidate for steps, candidate in record.finals}

    @overload
    async def call(self, job: PolicyJob, timeout_s: float) -> PolicyResult: ...
    @overload
    async def call(self, job: PrmJob, timeout_s: float) -> PrmResult: ...
    async def call(self, job: Job, timeout_s: float) -> Result:
        if isinstance(job, PrmJob):
            try:
                scores = [[self.step_score[tuple(path[: d + 1])] for d in range(len(path))] for path in job.paths]
            except KeyError:
                return _refused(job, "a PRM job for a path the record does not hold")
            return PrmResult(job_id=job.job_id, request_id=job.request_id, scores=scores)
        if job.kind == "final":
            candidate = self.finals.get(tuple(job.steps))
            if candidate is None:
                return await self.live.call(job, timeout_s)
            return PolicyResult(job_id=job.job_id, request_id=job.request_id, candidates=[candidate])
        if job.kind != "step":
            return _refused(job, f"a {job.kind!r} job (the record holds step-by-step paths)")
        if not job.steps:
            start, self.opened = self.opened, self.opened + job.sampling.n
            if self.opened > len(self.record.paths):
                return _refused(job, f"{self.opened} paths asked for; the record holds {len(self.record.paths)}")
            chosen = [(i, 0) for i in range(start, self.opened)]
        else:
            waiting = self.open.get(tuple(job.steps))
            if job.sampling.n != 1 or not waiting:
                return _refused(job, f"{job.sampling.n} continuations of a state no saved path is waiting at")
            chosen = [(waiting.popleft(), len(job.steps))]
        candidates = []
        for i, depth in chosen:
            if depth >= len(self.record.paths[i]):
                return _refused(job, f"saved path {i} ends after {depth} steps (recorded with fewer max_steps?)")
            candidate = self.record.paths[i][depth]
            self.open[(*job.steps, candidate.text)].append(i)
            candidates.append(_with_logprobs(candidate, job.sampling.logprobs))
        return PolicyResult(job_id=job.job_id, request_id=job.request_id, candidates=candidates)


def _refused(job: Job, why: str) -> Result:
    return failed_result(job, JobError(code="not_in_record", message=f"saved paths: {why}", recoverable=False))


def _with_logprobs(candidate: Candidate, k: int | None) -> Candidate:
    """The candidate as a job asking for ``k`` top log-probabilities per token (None: none) gets it."""
    if k is None:
        return candidate.model_copy(update={"token_logprobs": None, "top_logprobs": None})
    if candidate.top_logprobs is None:
        return candidate
    return candidate.model_copy(update={"top_logprobs": [top[:k] for top in candidate.top_logprobs]})


def record_key(params: SolveParams, image: bytes | None, settings: Settings, n: int) -> dict[str, Any]:
    """What a record's paths depend on: the problem, the request's seed and sampling, the models and ``n``."""
    return {
        "question": params.question,
        "choices": params.choices,
        "image": hashlib.sha256(image).hexdigest() if image is not None else None,
        "seed": params.seed,
        "max_steps": params.max_steps,
        "temperature": params.temperature if params.temperature is not None else settings.temperature,
        "top_p": params.top_p if params.top_p is not None else settings.top_p,
        "top_k": params.top_k if params.top_k is not None else settings.top_k,
        "top_logprobs": settings.top_logprobs,
        "policy_model": str(settings.policy_model),
        "prm_model": str(settings.prm_model),
        "prompt_preset": settings.prompt_preset,
        "n": n,
    }


class SavedPathsClient:
    """A ``SolveClient`` that answers path-level strategies from saved paths (recorded on first use, in ``folder``)
    and passes everything else to the live embedded service."""

    def __init__(self, live: RuntimeSolveClient, folder: Path, n: int = DEFAULT_PATHS) -> None:
        self.live = live
        """The embedded service: its runtime's queue client and settings."""
        self.folder = folder
        self.n = n
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def settings(self) -> Settings:
        settings: Settings = self.live.runtime.settings
        return settings

    async def solve(self, params: SolveParams, image: bytes | None) -> SolveResponse:
        strategy = params.search_strategy
        whole = getattr(params.search, "path_sampling", "steps") == "cot"  # CoT paths are sampled fresh, not replayed
        if strategy is None or not strategy.path_level or whole:
            response: SolveResponse = await self.live.solve(params, image)
            return response
        ceiling = getattr(params.search, "candidates", 1)
        if ceiling > self.n:
            raise SolveRequestError(f"{ceiling} paths asked for; --paths-n is {self.n}", transient=False)
        image = await self.live.checked_image(image)
        record = await self.load_or_record(params, image)
        solver = Solver(ReplayClient(record, self.live.runtime.client), self.settings)
        try:
            return await solver.solve(params, image)
        except AtomThinkError as exc:  # the runner grades it as a failed solve
            raise SolveRequestError(f"{exc.code}: {exc.message}", transient=False) from exc

    async def load_or_record(self, params: SolveParams, image: bytes | None) -> SavedPaths:
        key = record_key(params, image, self.settings, self.n)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        path = self.folder / f"{digest}.json.gz"
        async with self._locks[digest]:
            if path.is_file():
                return await asyncio.to_thread(_read, path)
            record = await self.record(params, image, key)
            await asyncio.to_thread(_write, path, record)
            return record

    async def record(self, params: SolveParams, image: bytes | None, key: dict[str, Any]) -> SavedPaths:
        """Sample and score ``n`` paths through the live queue, with the request's seed and sampling."""
        recorder = RecordingClient(self.live.runtime.client)
        fields = {"question", "choices", "seed", "max_steps", "temperature", "top_p", "top_k"}
        request = SolveParams(
            **params.model_dump(include=fields), mode="slow", strategy="deepconf", candidates=self.n
        )  # a path-level request's sampling; the solver below runs ``record_search`` instead of DeepConf
        await _RecordingSolver(recorder, self.settings, self.n).solve(request, image)
        return paths_from_calls(recorder.calls, key)


def _read(path: Path) -> SavedPaths:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return SavedPaths.model_validate_json(handle.read())


def _write(path: Path, record: SavedPaths) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as handle:
        handle.write(record.model_dump_json())
    partial.replace(path)
