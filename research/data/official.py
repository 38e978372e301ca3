"""The official AtomThink record layouts (AMATH-SFT, AMATH-PRM, annotation steps) as pydantic models.

Field layouts from the official data engine and released data (see ``shared/notes/atomthink.md``):

* **AMATH-SFT** (sharegpt): ``{"image", "conversations": [{"from": "human", "value": question + history +
  instruction}, {"from": "gpt", "value": "Step k: ..."}], "answer"}``: one Markov record per atomic step (the
  history state in the human turn, the current action in the gpt turn).
* **AMATH-PRM**: ``{"question", "process", "label": ["+" | "-", ...]}``: ``process`` is the steps each followed by
  the step tag, one label per step.
* **annotation**: the LLM annotator's node ``{"content", "next_action": "continue" | "final_answer"}``.

Extra fields (ids, provenance) are allowed on every record, as the project's own writers add them; the official
fields must be present with these types. ``research.annotate`` writes these records and the training recipes read
them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NextAction = Literal["continue", "final_answer"]
PrmLabel = Literal["+", "-"]


class AnnotationStep(BaseModel):
    """One node of an annotated path, as the official annotator writes it."""

    model_config = ConfigDict(extra="allow")

    content: str = Field(min_length=1)
    next_action: NextAction


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: Literal["human", "gpt"] = Field(alias="from")
    value: str


class SftRecord(BaseModel):
    """An AMATH-SFT Markov record: one human turn (question, history, instruction) and one gpt turn (the action)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    image: str | None
    """Image path relative to the data file (``None`` for a text-only problem)."""
    conversations: list[Turn] = Field(min_length=2, max_length=2)
    answer: str

    @field_validator("conversations")
    @classmethod
    def _human_then_gpt(cls, turns: list[Turn]) -> list[Turn]:
        if [t.from_ for t in turns] != ["human", "gpt"]:
            raise ValueError("conversations must be one human turn then one gpt turn")
        if not turns[1].value.strip():
            raise ValueError("the gpt turn (the current action) is empty")
        return turns


class PrmRecord(BaseModel):
    """An AMATH-PRM record: the steps of one process, each followed by ``step_tag``, and one label per step."""

    model_config = ConfigDict(extra="allow")

    question: str = Field(min_length=1)
    process: str = Field(min_length=1)
    label: list[PrmLabel] = Field(min_length=1)


def validate_prm(record: dict[str, Any], step_tag: str) -> PrmRecord:
    """Validate a PRM record and check it has one label per ``step_tag``-terminated step."""
    parsed = PrmRecord.model_validate(record)
    _check_tags(parsed, step_tag)
    return parsed


def _check_tags(record: PrmRecord, step_tag: str) -> None:
    if not record.process.endswith(step_tag):
        raise ValueError(f"process does not end with the step tag {step_tag!r}")
    steps = record.process.split(step_tag)[:-1]
    if len(steps) != len(record.label):
        raise ValueError(f"{len(steps)} tagged steps but {len(record.label)} labels")
    if any(not s.strip() for s in steps):
        raise ValueError("an empty step in process")


class TaggedPrmRecord(PrmRecord):
    """A PRM record that names its step tag (``step_tag`` field), so it validates on its own."""

    step_tag: str = Field(min_length=1)

    @model_validator(mode="after")
    def _tags(self) -> TaggedPrmRecord:
        _check_tags(self, self.step_tag)
        return self
