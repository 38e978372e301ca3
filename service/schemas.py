"""HTTP wire types of the gateway: the solve request (JSON or multipart fields) and the solve response."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from service.orchestrator.strategies import registry
from service.orchestrator.strategies.base import ScoredParams, StrategyParams, field_error
from service.orchestrator.tree import Aggregation

Mode = Literal["direct", "cot", "quick", "slow"]
Strategy = str
"""A registered strategy's name (``service.orchestrator.strategies.registry``)."""
AggregationName = Aggregation


def path_level_strategies() -> tuple[str, ...]:
    """Strategies that sample whole paths (``candidates`` of them) rather than search step by step."""
    return tuple(s.name for s in registry.all_strategies() if s.path_level)


PATH_LEVEL_STRATEGIES: tuple[str, ...] = path_level_strategies()
"""The built-in path-level strategies (metrics pre-create their series)."""


def strategy_fields_schema(schema: dict[str, Any]) -> None:
    """Add every registered strategy's fields to a request model's JSON schema (and the strategy names to
    ``strategy``), each described with the strategies that take it: the OpenAPI of ``/solve`` (JSON and multipart)
    and of the OpenAI facade's ``atomthink`` object comes from the registry."""
    schema["additionalProperties"] = False  # a field no mode or strategy takes is refused
    properties = schema.setdefault("properties", {})
    if "strategy" in properties:
        slow = registry.names("slow")
        properties["strategy"] = {
            "anyOf": [{"type": "string", "enum": slow}, {"type": "null"}],
            "default": None,
            "title": "Strategy",
            "description": f"slow only: {' | '.join(slow)} (default {registry.DEFAULT_SLOW}).",
        }
    for name in registry.param_fields():
        owners = registry.owners(name)
        owner = registry.get(owners[0]).params
        field_schema = dict(owner.model_json_schema()["properties"][name])
        field_schema["description"] = f"{', '.join(owners)}: {field_schema.get('description', '')}"
        properties[name] = field_schema


class SolveParams(BaseModel):
    """Everything a solve request says except the image: the common fields declared here, and the chosen
    strategy's own fields (its ``StrategyParams``, from the registry), validated into ``search``."""

    model_config = ConfigDict(extra="allow", json_schema_extra=strategy_fields_schema)

    question: str = Field(min_length=1, max_length=4000, description="The math question.")
    choices: list[str] | None = Field(
        None, max_length=26, description="Multiple-choice options; the answer is then an option letter."
    )
    mode: Mode = Field("quick", description="direct | cot | quick (QuickThink) | slow (SlowThink).")
    strategy: str | None = Field(None, description="slow only: a registered strategy (default beam).")
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
    _search: StrategyParams | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check_strategy_fields(self) -> SolveParams:
        if self.choices is not None and any(not c.strip() or len(c) > 1000 for c in self.choices):
            raise field_error("choices", "every choice must be 1 to 1000 characters")
        extra = {name: value for name, value in (self.model_extra or {}).items() if value is not None}  # null: unset
        known = registry.param_fields()
        for name in extra:
            if name not in known:
                raise field_error(name, "extra inputs are not permitted: no mode or strategy takes this field")
        if self.mode != "slow" and self.strategy is not None:
            raise field_error("strategy", f"'strategy' applies to mode 'slow' only, not {self.mode!r}")
        try:
            strategy = registry.for_mode(self.mode, self.strategy)
        except KeyError:
            slow = ", ".join(repr(n) for n in registry.names("slow"))
            raise field_error("strategy", f"unknown strategy {self.strategy!r}; expected one of {slow}") from None
        if strategy is None or strategy.mode != "slow":
            for name in extra:
                if strategy is None or name not in strategy.params.model_fields:
                    raise field_error(name, f"{name!r} applies to mode 'slow' only, not {self.mode!r}")
        if strategy is not None:
            for name in extra:
                if name not in strategy.params.model_fields:
                    raise field_error(
                        name,
                        f"does not apply to strategy {strategy.name!r} "
                        f"(it belongs to {', '.join(registry.owners(name))})",
                    )
            try:
                self._search = strategy.params.model_validate(extra)
            except ValidationError as exc:
                first = exc.errors()[0]
                ctx = first.get("ctx") or {}
                loc = [str(part) for part in first.get("loc", ())]
                name = ctx["field"] if isinstance(ctx.get("field"), str) else ".".join(loc) or "strategy"
                raise field_error(name, str(first.get("msg", "invalid value"))) from None
        return self

    @property
    def search(self) -> StrategyParams | None:
        """The chosen strategy's validated parameters (None for the one-shot modes)."""
        return self._search

    @property
    def resolved_strategy(self) -> str | None:
        """The strategy a slow request runs (None for the other modes, QuickThink included)."""
        return (self.strategy or registry.DEFAULT_SLOW) if self.mode == "slow" else None

    @property
    def search_strategy(self) -> registry.Strategy[Any] | None:
        """The registered strategy that runs this request (QuickThink for ``quick``, None for direct and cot)."""
        return registry.for_mode(self.mode, self.strategy)

    @property
    def resolved_candidates(self) -> int:
        """Candidates per policy call (slow strategies' ``candidates``; 1 otherwise)."""
        return self._search.candidates_per_call if self._search is not None else 1

    @property
    def resolved_aggregation(self) -> Aggregation | None:
        return self._search.aggregation if isinstance(self._search, ScoredParams) else None

    def cost(self) -> int:
        """Candidates the request asks the policy for per step (what a quota counts)."""
        strategy = self.search_strategy
        if strategy is None or self._search is None:
            return 1
        return strategy.cost(self._search)


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
    prompt_tokens: int = Field(
        0,
        description="Prompt tokens the policy read: each policy call's prompt once (image positions included); 0 "
        "where the policy backend cannot tell.",
    )
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
    queue_wall: float = Field(
        0.0,
        description="Wall time with at least one of this request's jobs waiting to be picked up (the union of "
        "their waits: jobs waiting side by side count once).",
    )


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
    strategy: str | None
    aggregation: Aggregation | None
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
