"""Wire types of the step queue, shared by the gateway (orchestrator) and the workers.

Versioned pydantic models, JSON on the wire. Depends on nothing but pydantic so any process can import it.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1

Role = Literal["policy", "prm"]
PromptKind = Literal["step", "direct", "cot", "final"]
FinishReason = Literal["delimiter", "eos", "length"]


MAX_TOP_LOGPROBS = 20
"""Most top log-probabilities per generated token a job may ask for (vLLM's default ``max_logprobs``)."""


def new_id() -> str:
    return uuid.uuid4().hex


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class SamplingParams(BaseModel):
    """How to sample the candidates of one policy job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1, le=64)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(50, ge=0)
    max_new_tokens: int = Field(96, ge=1)
    min_new_tokens: int | None = Field(None, ge=1)
    """Least room the job needs: a worker cuts ``max_new_tokens`` to its context window's room down to this, and
    refuses the job (``context_length_exceeded``) below it. None: all of ``max_new_tokens`` (atomic steps)."""
    seed: int = Field(0, ge=0)
    """Candidate ``i`` samples with its own generator seeded from (seed, i): results do not depend on batching."""
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    """Report token log-probabilities with each candidate: the sampled token's and the ``logprobs`` most likely
    tokens' at every generated position (0: the sampled token's only). None: none (no cost)."""


class JobError(BaseModel):
    """A typed failure a worker reports instead of a result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    message: str
    recoverable: bool = True


class PolicyJob(_Message):
    """Generate ``sampling.n`` continuations of one state (question + steps so far)."""

    job_id: str = Field(default_factory=new_id)
    request_id: str
    kind: PromptKind = "step"
    question: str
    image_id: str | None = None
    steps: list[str] = Field(default_factory=list)
    sampling: SamplingParams
    prompt_preset: str | None = None
    """The preset whose step rules the gateway's search applies; a worker serving another preset refuses the job."""
    enqueued_at: float = Field(default_factory=time.time)
    expires_at: float | None = None
    """Unix time after which nobody waits for the result (the gateway's job timeout ran out, or the gateway is gone):
    a worker that takes the job later acknowledges it without computing it."""


class Candidate(BaseModel):
    """One generated continuation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    num_tokens: int = Field(ge=0)
    finish_reason: FinishReason
    prompt_tokens: int = Field(0, ge=0)
    """Tokens of the prompt this candidate continued (image tokens included; the same for every candidate of one
    job); 0 when the backend cannot tell."""
    token_logprobs: list[float] | None = None
    """Only when the job asked for ``logprobs``: per generated token (``num_tokens`` of them, the delimiter or EOS
    token included), the log-probability of the sampled token under the policy's raw distribution (before
    temperature, top-k and top-p), as vLLM reports it by default."""
    top_logprobs: list[list[float]] | None = None
    """Only when the job asked for ``logprobs``: per generated token, the ``logprobs`` highest log-probabilities of
    that position's raw distribution, highest first (token identities are not carried: the confidence scores in
    ``atomthink.confidence`` need only the values)."""

    @model_validator(mode="after")
    def _logprobs_fit(self) -> Candidate:
        if (self.token_logprobs is None) != (self.top_logprobs is None):
            raise ValueError("token_logprobs and top_logprobs come together")
        if (
            self.token_logprobs is not None
            and self.top_logprobs is not None
            and (len(self.token_logprobs) != len(self.top_logprobs))
        ):
            raise ValueError(
                f"{len(self.token_logprobs)} token log-probabilities for {len(self.top_logprobs)} positions"
            )
        return self


class PrmJob(_Message):
    """Score every step of each path (all sharing one question)."""

    job_id: str = Field(default_factory=new_id)
    request_id: str
    question: str
    paths: list[list[str]] = Field(min_length=1)
    known_scores: list[list[float]] = Field(default_factory=list)
    """Per path (empty: none), the scores of its first steps that the gateway already holds from an earlier job.
    A PRM's score of a step depends only on the text up to it, so a backend that pays per step (one engine
    request each, ``openai-completions``) scores only the steps after them and returns these as they are."""
    enqueued_at: float = Field(default_factory=time.time)
    expires_at: float | None = None
    """Unix time after which nobody waits for the result (the gateway's job timeout ran out, or the gateway is gone):
    a worker that takes the job later acknowledges it without computing it."""

    @model_validator(mode="after")
    def _known_scores_fit(self) -> PrmJob:
        if self.known_scores and len(self.known_scores) != len(self.paths):
            raise ValueError(f"known_scores has {len(self.known_scores)} entries for {len(self.paths)} paths")
        for path, known in zip(self.paths, self.known_scores, strict=False):
            if len(known) > len(path):
                raise ValueError(f"{len(known)} known scores for a path of {len(path)} steps")
        return self


class _Result(_Message):
    job_id: str
    request_id: str
    worker_id: str = ""
    batch_size: int = Field(1, ge=1)
    """Jobs in the model call that produced this result."""
    queue_ms: float = Field(0.0, ge=0)
    """Time from enqueue to pick-up by the worker."""
    compute_ms: float = Field(0.0, ge=0)
    error: JobError | None = None


class PolicyResult(_Result):
    candidates: list[Candidate] = Field(default_factory=list)


class PrmResult(_Result):
    scores: list[list[float]] = Field(default_factory=list)
    """One list per path, one score in [0, 1] per step."""


Job = PolicyJob | PrmJob
Result = PolicyResult | PrmResult


def role_of(job: Job) -> Role:
    """Which workers serve ``job``."""
    return "policy" if isinstance(job, PolicyJob) else "prm"


def failed_result(job: Job, error: JobError) -> Result:
    """The result that answers ``job`` with ``error`` (a worker's refusal, a dead letter, a failed model call)."""
    if isinstance(job, PolicyJob):
        return PolicyResult(job_id=job.job_id, request_id=job.request_id, error=error)
    return PrmResult(job_id=job.job_id, request_id=job.request_id, error=error)
