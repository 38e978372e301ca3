"""Tiny standard Hugging Face checkpoints: a LLaVA policy (CLIP-style tower + Llama decoder) and a Llama PRM.

Both use one character-level ``tokenizer.json`` so they train and run on a CPU in minutes. They are ordinary
``LlavaForConditionalGeneration`` / ``LlamaForCausalLM`` checkpoints: the serving code loads them through
``AutoModelForImageTextToText`` / ``AutoModelForCausalLM`` exactly as it loads real AtomThink models.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from atomthink.prompts import PRESET_FILE

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<|user|>", "<|assistant|>"]
EXTRA_TOKENS = ["ки"]
CHARS = string.digits + string.ascii_letters + string.punctuation + " \n" + "×÷−²√π°≈≤≥"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinyPolicyShape:
    """Sizes of the tiny LLaVA."""

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_positions: int = 1024


@dataclass(frozen=True)
class TinyPrmShape:
    """Sizes of the tiny Llama PRM."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    max_positions: int = 1024


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer (every character one token) with the special tokens both models use."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + EXTRA_TOKENS)}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("ки|[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _llama_config(
    tokenizer: PreTrainedTokenizerFast, hidden: int, layers: int, heads: int, max_positions: int
) -> LlamaConfig:
    """A tiny Llama decoder over the character tokenizer (the policy's text model and the PRM)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def build_tiny_policy(out_dir: str | Path, shape: TinyPolicyShape = TinyPolicyShape(), seed: int = 0) -> Path:
    """Write a randomly initialised tiny LLaVA checkpoint with its processor; returns the directory."""
    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_hidden * 2,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=2,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.vision_hidden,
    )
    text = _llama_config(tokenizer, shape.text_hidden, shape.text_layers, shape.text_heads, shape.max_positions)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.get_vocab()["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / PRESET_FILE).write_text(json.dumps({"prompt_preset": "tiny"}, indent=2) + "\n")
    return out


def _save_prm(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """Save a tiny PRM checkpoint: weights, tokenizer and the ``tiny`` PRM preset."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / PRESET_FILE).write_text(json.dumps({"prm_preset": "tiny"}, indent=2) + "\n")
    return out


def build_tiny_prm(out_dir: str | Path, shape: TinyPrmShape = TinyPrmShape(), seed: int = 0) -> Path:
    """Write a randomly initialised tiny causal-LM PRM (Math-Shepherd-style ``ки`` tag, ``+``/``-`` labels)."""
    torch.manual_seed(seed)
    tokenizer = char_tokenizer()
    config = _llama_config(tokenizer, shape.hidden, shape.layers, shape.heads, shape.max_positions)
    model = LlamaForCausalLM(config)
    return _save_prm(model, tokenizer, out_dir)


def prm_from_policy(policy_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a causal-LM PRM whose weights are the policy's language model (decoder and tied LM head), the vision
    tower and projector dropped: the PRM starts from what the policy knows of steps and arithmetic, as real PRMs start
    from their base LLM (Math-Shepherd, AtomThink). Both models share the character tokenizer."""
    from safetensors.torch import load_file

    policy = Path(policy_dir)
    config = json.loads((policy / "config.json").read_text())
    if "text_config" not in config:
        raise ValueError(f"{policy} is not a tiny LLaVA policy: its config has no text_config")
    text_config = config["text_config"]
    tokenizer = char_tokenizer()
    if text_config["vocab_size"] != len(tokenizer):
        raise ValueError(f"{policy} has a vocabulary of {text_config['vocab_size']}, not the tiny tokenizer's")
    prefix = "language_model."
    state = {k[len(prefix) :]: v for k, v in load_file(policy / "model.safetensors").items() if k.startswith(prefix)}
    model = LlamaForCausalLM(LlamaConfig(**text_config))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"{policy} is not a tiny LLaVA policy: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return _save_prm(model, tokenizer, out_dir)
