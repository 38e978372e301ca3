"""HTTP wire types of the gateway: the solve request (JSON or multipart fields) and the solve response."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

Mode = Literal["direct", "cot", "quick", "slow"]
Strategy = Literal["beam", "greedy", "best_of_n", "majority", "weighted_majority"]
PATH_LEVEL_STRATEGIES: tuple[Strategy, ...] = ("best_of_n", "majority", "weighted_majority")
"""Strategies that sample whole paths (``candidates`` of them) rather than search step by step."""
AggregationName = Literal["min", "last", "mean", "prod"]

SLOW_ONLY_FIELDS = (
    "strategy",
    "candidates",
    "beam_width",
    "aggregation",
    "beam_start",
    "keep_invalid",
    "temperature_ramp",
    "max_samples",
    "tie_break",
    "adaptive",
    "min_candidates",
    "wave_size",
    "stop_votes",
    "stop_share",
    "prune_fraction",
    "prune_interval",
)
BEAM_ONLY_FIELDS = ("beam_start", "keep_invalid", "temperature_ramp", "max_samples")
VOTE_STRATEGIES: tuple[Strategy, ...] = ("majority", "weighted_majority")
ADAPTIVE_FIELDS = ("min_candidates", "wave_size", "stop_votes", "stop_share")
"""Parameters of the adaptive vote's stopping rule: they need ``adaptive: true``."""
PRUNE_FIELDS = ("prune_fraction", "prune_interval")


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A validation error that names its field (model validators otherwise report at the model root)."""
    return PydanticCustomError("invalid_combination", "{message}", {"field": field, "message": message})


class SolveParams(BaseModel):
    """Everything a solve request says except the image."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000, description="The math question.")
    choices: list[str] | None = Field(
        None, max_length=26, description="Multiple-choice options; the answer is then an option letter."
    )
    mode: Mode = Field("quick", description="direct | cot | quick (QuickThink) | slow (SlowThink).")
    strategy: Strategy | None = Field(
        None, description="slow only: beam (default) | greedy | best_of_n | majority | weighted_majority."
    )
    candidates: int | None = Field(
        None,
        ge=1,
        le=64,
        description="slow only: candidates per step (beam, greedy) or whole paths (default 3).",
    )
    beam_width: int | None = Field(None, ge=1, le=16, description="slow beam only: beams kept per depth (default 2).")
    aggregation: AggregationName | None = Field(
        None, description="slow only: step-score aggregation (default last for beam/greedy, min otherwise)."
    )
    beam_start: Literal["root", "beams"] | None = Field(
        None,
        description="slow beam/greedy: first depth from one root or from beam_width empty rollouts (official); "
        "default from the prompt preset.",
    )
    keep_invalid: bool | None = Field(
        None,
        description="slow beam/greedy: rank candidates the step rules reject (official) instead of dropping them; "
        "default from the prompt preset.",
    )
    temperature_ramp: float | None = Field(
        None,
        ge=0,
        le=2,
        description="slow beam/greedy: temperature added per candidate, capped at 1.0 (official v2: 0.5); "
        "default from the prompt preset.",
    )
    max_samples: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="slow beam/greedy: no new depth starts after this many sampled candidates (official v1: 200, "
        "v2: 299); default from the prompt preset.",
    )
    tie_break: Literal["first", "prm"] | None = Field(
        None,
        description="slow majority: a tie goes to the answer sampled first (default, no PRM call) or to the "
        "best-scored path (PRM scores every path).",
    )
    adaptive: bool | None = Field(
        None,
        description="slow majority/weighted_majority: sample paths in waves and stop once the leading answer is safe "
        "or certain (stop_votes, stop_share); candidates is then the ceiling (default false).",
    )
    min_candidates: int | None = Field(
        None, ge=1, le=64, description="adaptive votes: paths in the first wave, before any stop (default 4)."
    )
    wave_size: int | None = Field(None, ge=1, le=64, description="adaptive votes: paths per later wave (default 2).")
    stop_votes: int | None = Field(
        None, ge=1, le=64, description="adaptive votes: paths the leader needs for the certainty stop (default 3)."
    )
    stop_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="adaptive votes: share of the votes (of the PRM weight in weighted_majority) the leader needs "
        "for the certainty stop (default 0.75).",
    )
    prune_fraction: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="slow best_of_n: fraction of the open paths stopped at each pruning check, lowest partial PRM "
        "score first (default 0: no pruning).",
    )
    prune_interval: int | None = Field(
        None, ge=1, le=50, description="slow best_of_n: steps between pruning checks (default 2)."
    )
    max_thinking_tokens: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Generated tokens over all candidates: no policy call starts once they are spent, and the best "
        "path so far comes back (truncated: true).",
    )
    max_steps: int = Field(20, ge=1, le=50, description="Most atomic steps per path.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(
        None, ge=0, le=1000, description="Top-k cut (0 = off); unset, the server's setting or the prompt preset's."
    )
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed, same request: same answer.")
    deadline_ms: int | None = Field(
        None,
        ge=1,
        le=3_600_000,
        description="Return the best answer so far after this long (truncated: true).",
    )
    return_tree: bool = Field(False, description="Include every expanded node with its score and parent.")
    stream: bool = Field(
        False,
        description="Answer with Server-Sent Events: expansion, scoring and selection events, then result (this "
        "response's body) or error. Also chosen by 'Accept: text/event-stream'.",
    )

    @model_validator(mode="after")
    def _check_mode_fields(self) -> SolveParams:
        if self.mode != "slow":
            for name in SLOW_ONLY_FIELDS:
                if getattr(self, name) is not None:
                    raise _field_error(name, f"{name!r} applies to mode 'slow' only, not {self.mode!r}")
        if self.strategy == "greedy" and self.beam_width not in (None, 1):
            raise _field_error("beam_width", "greedy search keeps exactly one beam; omit beam_width or use beam")
        if self.strategy in PATH_LEVEL_STRATEGIES:
            for name in ("beam_width", *BEAM_ONLY_FIELDS):
                if getattr(self, name) is not None:
                    raise _field_error(name, f"{name} does not apply to strategy {self.strategy!r}")
        if self.adaptive is not None and self.strategy not in VOTE_STRATEGIES:
            raise _field_error("adaptive", "adaptive applies to strategies 'majority' and 'weighted_majority' only")
        for name in ADAPTIVE_FIELDS:
            if getattr(self, name) is not None and not self.adaptive:
                raise _field_error(name, f"{name} applies with adaptive: true only")
        if self.min_candidates is not None and self.min_candidates > self.resolved_candidates:
            raise _field_error("min_candidates", "min_candidates cannot exceed candidates (the ceiling)")
        for name in PRUNE_FIELDS:
            if getattr(self, name) is not None and self.strategy != "best_of_n":
                raise _field_error(name, f"{name} applies to strategy 'best_of_n' only")
        if self.tie_break is not None and self.strategy != "majority":
            raise _field_error("tie_break", "tie_break applies to strategy 'majority' only")
        if self.choices is not None and any(not c.strip() or len(c) > 1000 for c in self.choices):
            raise _field_error("choices", "every choice must be 1 to 1000 characters")
        return self

    @property
    def resolved_strategy(self) -> Strategy | None:
        return (self.strategy or "beam") if self.mode == "slow" else None

    @property
    def resolved_candidates(self) -> int:
        return (self.candidates or 3) if self.mode == "slow" else 1

    @property
    def resolved_beam_width(self) -> int:
        if self.resolved_strategy == "greedy":
            return 1
        return self.beam_width or 2

    @property
    def resolved_aggregation(self) -> AggregationName | None:
        if self.mode != "slow":
            return None
        if self.aggregation is not None:
            return self.aggregation
        return "last" if self.resolved_strategy in ("beam", "greedy") else "min"


class SolveJsonRequest(SolveParams):
    """``application/json`` body: the image as base64 or a ``data:`` URL."""

    image: str | None = Field(None, description="Base64 or data URL of a PNG/JPEG/... image (optional).")


class Step(BaseModel):
    text: str
    score: float | None = Field(None, description="PRM probability that the step is correct (slow mode).")


class Stats(BaseModel):
    policy_calls: int
    prm_calls: int
    generated_tokens: int
    expanded_nodes: int
    paths: int | None = Field(None, description="Path-level strategies: whole paths sampled.")
    paths_ceiling: int | None = Field(None, description="Path-level strategies: the candidates asked for.")
    paths_saved: int | None = Field(None, description="Path-level strategies: paths never sampled (ceiling - paths).")
    paths_pruned: int | None = Field(None, description="best_of_n: paths stopped early by pruning.")
    tokens_saved: int | None = Field(
        None,
        description="Path-level strategies: estimated tokens not generated against the ceiling: the mean tokens of "
        "a sampled path times the paths saved, plus what pruned paths would have needed to reach that mean.",
    )
    stop_reason: Literal["safe", "certain", "ceiling"] | None = Field(
        None,
        description="Adaptive votes: the leader could not be overtaken, met the certainty rule, or the "
        "ceiling was reached.",
    )


class Timings(BaseModel):
    total: float
    policy: float = Field(description="Wall time with at least one policy job outstanding.")
    prm: float = Field(description="Wall time with at least one PRM job outstanding.")
    queue: float = Field(description="Enqueue-to-pick-up time summed over this request's jobs.")


class TreeNode(BaseModel):
    id: int
    parent: int | None
    text: str
    depth: int
    score: float | None
    final: bool
    invalid: str | None = None


class SolveResponse(BaseModel):
    id: str
    answer: str | None = Field(description="Extracted answer: option letter or value; null when none was reached.")
    final: bool = Field(description="The answer comes from a step that states the final answer.")
    steps: list[Step]
    mode: Mode
    strategy: Strategy | None
    aggregation: AggregationName | None
    votes: dict[str, int] | None = Field(None, description="majority strategies: paths per answer.")
    vote_weights: dict[str, float] | None = Field(
        None, description="weighted_majority: summed aggregated PRM score per answer."
    )
    stats: Stats
    timings_ms: Timings
    truncated: bool
    tree: list[TreeNode] | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
