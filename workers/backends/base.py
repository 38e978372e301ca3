"""The interfaces workers call; the orchestrator never sees a concrete backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from atomthink.prompts import PromptPreset
from atomthink.protocol import Candidate, PromptKind, SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    """One state to continue ``sampling.n`` times."""

    kind: PromptKind
    question: str
    steps: Sequence[str]
    image: Image.Image | None
    sampling: SamplingParams


@dataclass(frozen=True)
class ScoreRequest:
    """Paths (lists of steps) that share one question."""

    question: str
    paths: Sequence[Sequence[str]]
    known: Sequence[Sequence[float]] = ()
    """Per path (or empty), the scores of its first steps from an earlier job: a backend may skip those steps."""


class PolicyBackend(Protocol):
    """Generates candidate next steps (or whole answers) for a batch of states."""

    preset: PromptPreset

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        """All candidates of all requests, in as few model calls as the backend can manage."""
        ...

    @property
    def model_calls(self) -> int:
        """Model invocations so far (``generate`` calls on the underlying model)."""
        ...


class StepScorer(Protocol):
    """A process reward model: scores every step of every path."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[list[float]]]:
        """Per request, per path, per step: probability that the step is correct."""
        ...

    @property
    def model_calls(self) -> int: ...


@runtime_checkable
class WindowedPolicy(Protocol):
    """A policy backend that knows its context window; workers call ``fit`` on every job before the model call."""

    def fit(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` (``max_new_tokens`` cut to the room left when it allows), or ``ContextTooLong``."""
        ...


@runtime_checkable
class EnginePolicyBackend(PolicyBackend, Protocol):
    """A policy on an engine that batches by itself (vLLM in process or behind HTTP): the worker hands it one job
    at a time, keeping up to ``max_inflight`` running, instead of static batches."""

    async def agenerate(self, request: GenerationRequest) -> list[Candidate]:
        """The candidates of one request; safe to await many times concurrently from the worker's event loop."""
        ...


class EngineDead(RuntimeError):
    """The backend's engine died (its process exited, a CUDA error) or stopped answering (a hung kernel, a stopped
    process): nothing it holds will be answered. The worker hands its jobs back to the queue and exits non-zero."""


@runtime_checkable
class HealthChecked(Protocol):
    """A backend whose engine can die under the worker (vLLM in process: a child engine process)."""

    async def check_health(self) -> None:
        """Return when the engine answers a probe; raise ``EngineDead`` when it is dead or did not answer in time.
        Awaited from the worker's event loop, concurrently with jobs."""
        ...


@runtime_checkable
class WindowedScorer(Protocol):
    """A PRM backend that knows its context window."""

    def fit(self, request: ScoreRequest) -> None:
        """``ContextTooLong`` when a path of ``request`` does not fit."""
        ...


@runtime_checkable
class EngineStepScorer(StepScorer, Protocol):
    """A PRM on an engine that batches by itself: scored one job at a time, many in flight."""

    async def ascore(self, request: ScoreRequest) -> list[list[float]]:
        """Per path, per step scores of one request; safe to await concurrently from the worker's event loop."""
        ...
