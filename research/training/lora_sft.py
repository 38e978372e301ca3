"""Atomic-step SFT with LoRA for real multimodal checkpoints (LLaVA-style, Qwen2-VL/Qwen2.5-VL, Llama-3.2-Vision).

Markov format: each example is one state (question + the steps so far, rendered by the serving prompt preset) and
its next atomic action; the loss covers the action tokens only (the prompt, the image tokens and the padding are
``-100``). The prompt goes through the checkpoint's own processor and chat template exactly as the transformers
policy backend builds it (``chat_messages`` + ``apply_chat_template(add_generation_prompt=True)``), and the
prompt's token ids are checked to be a prefix of the training sequence, so what is trained is what is served.

Records (JSONL), either layout:

* the official AtomMATH-SFT sharegpt record: ``{"image", "conversations": [{"from": "human", "value": prompt},
  {"from": "gpt", "value": "Step k: ..."}]}``; the human value is the rendered step prompt (a leading ``<image>``
  placeholder is dropped: the processor places the image);
* a path: ``{"question", "steps": [...], "image"}`` (an annotated path): one Markov example per step, rendered
  with the preset.

A target ends the way the preset ends a step: its step delimiter for a non-final step, EOS otherwise (the official
presets have no delimiter: every step ends at EOS, as the official generation stops).

Training runs on ``transformers.Trainer`` with a ``peft`` LoRA on the language model's attention and MLP
projections; the output is a merged checkpoint (default) or an adapter folder, with the processor and an
``atomthink.json`` naming the prompt preset, which ``atomthink serve`` loads as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from atomthink.prompts import PromptPreset, chat_messages, resolve_prompt_preset
from atomthink.steps import get_step_rules
from research.data.records import read_jsonl
from research.training.common import LoraTrainingConfig, lora_config, train_lora

LANGUAGE_MODEL_PROJECTIONS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA targets of a multimodal checkpoint: the decoder's projections (LLaVA, Qwen2-VL, Qwen2.5-VL and Mllama all
name their decoder ``language_model`` in transformers 5; Mllama's cross-attention projections are included)."""


@dataclass
class LoraSftConfig(LoraTrainingConfig):
    """The SFT recipe: ``data`` holds SFT JSONL files (or folders holding ``sft.jsonl``)."""

    preset: str = "auto"
    """Prompt preset the data is rendered with and the output declares (``auto``: the base's ``atomthink.json``,
    else AtomThink v1)."""
    image_root: str | None = None
    """Folder relative image paths are read from (default: each data file's folder)."""
    target_modules: str = LANGUAGE_MODEL_PROJECTIONS


def _data_file(path: str, name: str) -> Path:
    p = Path(path)
    return p / name if p.is_dir() else p


def load_markov_examples(
    paths: list[str], preset: PromptPreset, image_root: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """``{"prompt", "target_text", "final", "image"}`` per Markov example, from either record layout."""
    rules = get_step_rules(preset.step_rules)
    examples: list[dict[str, Any]] = []
    for path in paths:
        file = _data_file(path, "sft.jsonl")
        root = Path(image_root) if image_root else file.parent
        for record in read_jsonl(file):
            image = record.get("image")
            image_path = str(root / image) if image and not Path(image).is_absolute() else image
            if "conversations" in record:
                human = next(t["value"] for t in record["conversations"] if t["from"] == "human")
                gpt = next(t["value"] for t in record["conversations"] if t["from"] == "gpt")
                prompt = human.removeprefix("<image>\n").removeprefix("<image>")
                final = record["final"] if "final" in record else rules.check(gpt, None).final
                examples.append({"prompt": prompt, "target_text": gpt, "final": final, "image": image_path})
            else:
                steps = list(record["steps"])
                for k, step in enumerate(steps):
                    examples.append({
                        "prompt": preset.render("step", record["question"], steps[:k]),
                        "target_text": step,
                        "final": k == len(steps) - 1,
                        "image": image_path,
                    })  # fmt: skip
            if limit is not None and len(examples) >= limit:
                return examples[:limit]
    return examples


class MarkovCollator:
    """Tokenizes a batch through the processor (right padding) and masks everything but the actions."""

    def __init__(self, processor: Any, preset: PromptPreset) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
        self.preset = preset
        self.multimodal = hasattr(processor, "image_processor")
        self.nested_images = type(processor).__name__.startswith("Mllama")

    def texts(self, example: dict[str, Any]) -> tuple[str, str]:
        """The prompt text (as the policy backend renders it) and the full training text."""
        has_image = example["image"] is not None and self.multimodal
        owner = self.processor if self.multimodal else self.tokenizer
        if getattr(owner, "chat_template", None):
            messages = chat_messages(example["prompt"], has_image=has_image)
            if not self.multimodal:
                messages = [{"role": "user", "content": example["prompt"]}]
            prompt = str(owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        else:
            prompt = f"{self.processor.image_token}\n{example['prompt']}" if has_image else example["prompt"]
        delimiter = self.preset.step_delimiter
        end = delimiter if delimiter is not None and not example["final"] else self.tokenizer.eos_token
        return prompt, prompt + example["target_text"] + end

    def _encode(self, texts: list[str], images: list[Image.Image] | None) -> Any:
        kwargs: dict[str, Any] = {"return_tensors": "pt", "padding": True, "padding_side": "right"}
        if images is None:
            if self.multimodal:
                return self.processor(text=texts, **kwargs)
            return self.tokenizer(texts, add_special_tokens=False, **kwargs)
        return self.processor(images=[[im] for im in images] if self.nested_images else images, text=texts, **kwargs)

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        with_image = [e["image"] is not None and self.multimodal for e in batch]
        if any(with_image) and not all(with_image):
            raise ValueError("a batch mixes examples with and without an image; use batch_size 1 or split the data")
        images = [Image.open(e["image"]).convert("RGB") for e in batch] if all(with_image) else None
        pairs = [self.texts(e) for e in batch]
        inputs = self._encode([full for _, full in pairs], images)
        labels = inputs["input_ids"].clone()
        labels[inputs["attention_mask"] == 0] = -100
        for row, (prompt, _) in enumerate(pairs):
            prompt_ids = self._encode([prompt], [images[row]] if images is not None else None)["input_ids"][0]
            n = len(prompt_ids)
            if not torch.equal(inputs["input_ids"][row, :n], prompt_ids):
                raise ValueError(
                    "the prompt's tokens are not a prefix of prompt + action: the tokenizer merges across the border, "
                    "so the trained prompt would differ from the served one"
                )
            labels[row, :n] = -100
        return {**inputs, "labels": labels}


def train_lora_sft(cfg: LoraSftConfig) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    preset = resolve_prompt_preset(cfg.preset, cfg.model)
    examples = load_markov_examples(cfg.data, preset, cfg.image_root, cfg.max_records)
    if not examples:
        raise ValueError("no SFT examples in " + ", ".join(cfg.data))
    config = AutoConfig.from_pretrained(cfg.model)
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    if hasattr(config, "vision_config"):
        try:
            processor: Any = AutoProcessor.from_pretrained(cfg.model)
        except ImportError as exc:  # Qwen2-VL's processor needs a video processor, which needs torchvision
            if any(e["image"] is not None for e in examples):
                raise ImportError(
                    f"{cfg.model}: the processor cannot be built here ({exc}); image records need it"
                ) from exc
            processor = AutoTokenizer.from_pretrained(cfg.model)  # text-only records: the tokenizer is enough
        model: Any = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype)
    else:
        from transformers import AutoModelForCausalLM

        processor = AutoTokenizer.from_pretrained(cfg.model)
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    target = cfg.target_modules
    if not hasattr(config, "vision_config") and target == LANGUAGE_MODEL_PROJECTIONS:
        target = r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    lora = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, target)
    collator = MarkovCollator(processor, preset)
    history, trainable = train_lora(model, lora, cfg, examples, collator, processor, {"prompt_preset": preset.name})
    summary = {
        "config": asdict(cfg),
        "prompt_preset": preset.name,
        "examples": len(examples),
        "trainable_parameters": trainable,
        "losses": history,
    }
    (Path(cfg.out) / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
