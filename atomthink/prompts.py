"""Prompt presets: how a state (question + steps so far) becomes the policy's input text, per model family.

A preset only produces the *user message text* (with ``{image}`` replaced by nothing: the backend places the image
through the model's processor or chat template). Training (``research.data``) and serving share these functions,
so the model is asked at inference exactly what it was taught.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PromptKind = Literal["step", "direct", "cot", "final"]

PRESET_FILE = "atomthink.json"
"""A checkpoint directory may carry this file: ``{"prompt_preset": ..., "prm_preset": ...}``."""


@dataclass(frozen=True)
class SearchDefaults:
    """How SlowThink beam search runs for a model family, unless a request says otherwise."""

    beam_start: Literal["root", "beams"] = "root"
    """``beams``: the first depth expands ``beam_width`` empty rollouts (``beam_width x candidates`` samples), as
    the official SlowThink does; ``root``: it expands one root (``candidates`` samples)."""
    keep_invalid: bool = False
    """Rank candidates the step rules reject instead of dropping them (the official beam keeps every non-empty one)."""
    temperature_ramp: float = 0.0
    """Temperature added per candidate of one beam (official v2: +0.5), capped at ``ramp_cap``."""
    ramp_cap: float = 1.0
    max_samples: int | None = None
    """No new depth starts once this many candidates were drawn (official v1 ``try_n_total_step``, v2
    ``max_sampling_count``); ``None``: only ``max_steps`` bounds the search."""
    quick_stop_on_invalid: bool = False
    """QuickThink: a step still invalid after its resamples ends the reasoning (the fallback prompt answers), as the
    official QuickThink's ``break`` does (v1 ``quick_thinking``, v2 ``atomthink_quick.py``); False keeps the last
    resample and goes on."""


@dataclass(frozen=True)
class SamplingDefaults:
    """Sampling a model family was evaluated with; a request's or the settings' values override it."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50


@dataclass(frozen=True)
class PromptPreset:
    """Templates, step boundaries, step rules and search defaults of one model family."""

    name: str
    step_template: str
    """Fields: ``question``, ``history`` (steps joined by ``history_joiner``; empty before the first step)."""
    direct_template: str
    cot_template: str
    final_template: str | None
    """Asked once when no final step came (field: question); ``None`` derives it from the step prompt as the
    official ``fail_try`` does."""
    step_delimiter: str | None
    """Stop string that ends one atomic step (kept out of the step text); ``None``: the step ends at EOS."""
    history_joiner: str
    step_max_tokens: int = 96
    """Default token budget of one step (``max_step_tokens`` in settings overrides it)."""
    image_prefix: str = ""
    """Text the official prompt puts before the template (v1: ``<image>\\n``); backends place the image themselves."""
    step_rules: str = "tiny"
    """Name of the step rules (``atomthink.steps.STEP_RULES``)."""
    search: SearchDefaults = SearchDefaults()
    sampling: SamplingDefaults = SamplingDefaults()

    def render(self, kind: PromptKind, question: str, steps: Sequence[str] = ()) -> str:
        """The user text for one policy call (without ``image_prefix``)."""
        if kind == "step":
            return self.step_template.format(question=question, history=self.history_joiner.join(steps))
        if kind == "final" and self.final_template is None:
            return official_fallback(self.step_template.format(question=question, history=""))
        template = {"direct": self.direct_template, "cot": self.cot_template, "final": self.final_template}[kind]
        assert template is not None
        return template.format(question=question)


FALLBACK_INSTRUCTION = "Answer the question using a single word or phrase."


def official_fallback(step_prompt: str) -> str:
    """AtomThink's ``fail_try``: the text between the question and history headers, newlines made spaces, then the
    instruction again (v1 ``evaluation.py`` and v2 ``atomthink_quick.py``/``atomthink_slow.py``). The instruction
    line inside the template therefore appears twice, as in the official code."""
    question = step_prompt.split("THE GIVEN QUESTION:\n")[-1].split("HISTORICAL REASONING STEPS:")[0]
    return question.replace("\n", " ") + "\n" + FALLBACK_INSTRUCTION


# The official step template, character for character: Quinn777/AtomThink v1 ``utils/prompts.py`` at 5bb7f3e
# (``prompt_template``, which starts with ``<image>\n``) and v2 ``src/llamafactory/evaluation/utils/prompts.py`` at
# 1e4ae55 (``atomthink_prompt_template``, the same text without the image line). Its two ``{}`` slots become
# ``{question}`` and ``{history}``, filled as ``prompt_template.format(question, "")`` fills them.
ATOMTHINK_STEP_TEMPLATE = (
    "THE GIVEN QUESTION:\n{question}\nAnswer the question using a single word or phrase.\n\n"
    "HISTORICAL REASONING STEPS:\n{history}\n\n"
    "Your task is to predict the next step of reasoning or calculation based on THE GIVEN QUESTION and HISTORICAL "
    "REASONING STEPS. Ensure your prediction is a single atomic reasoning step, which should be small and focused. "
    "If the historical reasoning steps have already reached a conclusion, there is no need to predict the next step "
    'in reasoning; simply reply with "To sum up, the final answer is: ...".\n'
)

# History joiner: the official code disagrees with itself (v1 QuickThink appends ``"\n" + step``, v1 SlowThink
# ``"\n".join``, v2 QuickThink ``"\n\n" + "\n" + step``, v2 SlowThink ``"\n\n".join``). The SFT data the checkpoints
# were trained on joins with ``"\n\n"`` (``data_engine/generate_with_gt.py`` at 5bb7f3e, line 202: ``'\n\n'.join(
# steps[:step_id])``), and so do both official presets here.
_OFFICIAL_HISTORY_JOINER = "\n\n"
_DIRECT = "{question}\n" + FALLBACK_INSTRUCTION
_COT = (
    "{question}\nSolve the problem step by step, one short step per line, and end with "
    '"To sum up, the final answer is: ...".'
)

ATOMTHINK_V1 = PromptPreset(
    name="atomthink-v1",
    step_template=ATOMTHINK_STEP_TEMPLATE,
    direct_template=_DIRECT,
    cot_template=_COT,
    final_template=None,
    # Official generation has no stop string: a step ends at EOS (``inference_one_step``, max_new_tokens=1024).
    step_delimiter=None,
    history_joiner=_OFFICIAL_HISTORY_JOINER,
    step_max_tokens=1024,
    image_prefix="<image>\n",
    step_rules="atomthink-v1",
    # v1 ``slow_thinking`` and ``eval_configs/MathVista.json``: 2 beams x 3 candidates, budget try_n_total_step=200.
    search=SearchDefaults(beam_start="beams", keep_invalid=True, max_samples=200, quick_stop_on_invalid=True),
    sampling=SamplingDefaults(temperature=1.0, top_p=0.9, top_k=10),  # eval_configs/MathVista.json
)

ATOMTHINK_V2 = PromptPreset(
    name="atomthink-v2",
    step_template=ATOMTHINK_STEP_TEMPLATE,
    direct_template=_DIRECT,
    cot_template=_COT,
    final_template=None,
    step_delimiter=None,
    history_joiner=_OFFICIAL_HISTORY_JOINER,
    step_max_tokens=4096,  # configs/inference/*.yaml: max_new_tokens 4096
    step_rules="atomthink-v2",
    # v2 ``atomthink_slow.py``: temperature += 0.5 per candidate, capped at 1.0; ``sampling_count`` starts at 1 and
    # the loop runs while it is below max_sampling_count (300 in configs/inference/mathverse.yaml): 299 samples.
    search=SearchDefaults(
        beam_start="beams",
        keep_invalid=True,
        temperature_ramp=0.5,
        ramp_cap=1.0,
        max_samples=299,
        quick_stop_on_invalid=True,
    ),
    sampling=SamplingDefaults(temperature=0.2, top_p=0.7, top_k=50),  # configs/inference/mathverse.yaml
)

TINY_STEP_DELIMITER = "\n"
"""The shipped tiny models end every non-final step with one newline."""

TINY = PromptPreset(
    name="tiny",
    step_template="[step] {question}\n{history}",
    direct_template="[direct] {question}",
    cot_template="[cot] {question}",
    final_template="[direct] {question}",
    step_delimiter=TINY_STEP_DELIMITER,
    history_joiner="\n",
)

PRESETS: dict[str, PromptPreset] = {p.name: p for p in (ATOMTHINK_V1, ATOMTHINK_V2, TINY)}


def format_question(question: str, choices: Sequence[str] | None) -> str:
    """Append multiple-choice options as ``(A) ...`` lines, the layout MathVista uses."""
    if not choices:
        return question
    options = "\n".join(f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(choices))
    return f"{question}\nChoices:\n{options}"


def read_checkpoint_presets(model_dir: str | Path) -> dict[str, str]:
    """The preset names a checkpoint declares in ``atomthink.json`` (empty when it has none)."""
    path = Path(model_dir) / PRESET_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def resolve_prompt_preset(name: str, model_dir: str | Path) -> PromptPreset:
    """``auto`` takes the checkpoint's declared preset, falling back to the AtomThink v1 template."""
    if name == "auto":
        name = read_checkpoint_presets(model_dir).get("prompt_preset", ATOMTHINK_V1.name)
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown prompt preset {name!r}; known: {sorted(PRESETS)}") from None


def chat_messages(prompt: str, has_image: bool, answer: str | None = None) -> list[dict[str, object]]:
    """The chat the policy sees (and is trained on): one user turn, image first, then optionally the answer."""
    content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, object]] = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
