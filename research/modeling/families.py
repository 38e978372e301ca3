"""Tiny random-weight checkpoints of the model families the released AtomThink checkpoints use, built from their
configs (no download): LLaVA-style (``LlavaForConditionalGeneration``), Qwen2-VL, Qwen2.5-VL and Llama-3.2-Vision
(``MllamaForConditionalGeneration``), each with a processor of its family's layout; and PRMs of the two kinds the
serving backends load (a Qwen2 causal LM for Math-psa ``+``/``-`` tags, ``Qwen2ForProcessRewardModel``'s two-class
head). They exercise the training recipes and the serving backends on a CPU: same classes, same processors, same
save/load path as the real ones; only the sizes and the (character-level) tokenizers differ.

Image processors are the PIL variants: the torchvision-backed defaults cannot import beside the CPU torch here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from atomthink.prompts import PRESET_FILE
from research.modeling.tiny import CHARS, build_tiny_policy

POLICY_FAMILIES = ("llava", "qwen2-vl", "qwen2.5-vl", "mllama")

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
# The Qwen2-VL chat layout (system turn, <|im_start|>role\n ... <|im_end|>\n, image as vision_start/pad/end).
QWEN_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eot_id|>", "<|image|>"]  # fmt: skip
# The Llama 3.2 Vision chat layout (header ids, <|eot_id|>, image token first in the user turn).
MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _char_tokenizer(special: list[str], **named: str) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(special)}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    unk = named.get("unk_token", special[0])
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=core, **named)


def _finish(model: Any, processor: Any, out: Path, preset: str) -> Path:
    tokenizer = processor.tokenizer
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / PRESET_FILE).write_text(json.dumps({"prompt_preset": preset}, indent=2) + "\n")
    return out


class TorchvisionMissing(RuntimeError):
    """The family's processor cannot be built here: transformers' video processors need torchvision."""


def build_qwen_vl(
    out_dir: str | Path,
    family: str = "qwen2-vl",
    preset: str = "atomthink-v1",
    seed: int = 0,
    with_processor: bool = True,
) -> Path:
    """A tiny Qwen2-VL or Qwen2.5-VL (``family`` ``qwen2.5-vl``): 56x56 pixel images, 4 image tokens.

    ``Qwen2VLProcessor`` requires a video processor, and transformers' video processors require torchvision: without
    it this raises ``TorchvisionMissing`` (``with_processor=False`` saves what can be built: model, tokenizer and
    image processor)."""
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(seed)
    tokenizer = _char_tokenizer(QWEN_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                unk_token="<|endoftext|>")  # fmt: skip
    tokenizer.chat_template = QWEN_VL_TEMPLATE
    ids = tokenizer.get_vocab()
    text: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    tokens: dict[str, Any] = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if family == "qwen2-vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision: dict[str, Any] = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2,
                                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                                  "in_channels": 3}  # fmt: skip
        model: Any = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **tokens))
    elif family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = {"depth": 2, "hidden_size": 32, "out_hidden_size": 64, "intermediate_size": 64, "num_heads": 2,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3,
                  "window_size": 56, "fullatt_block_indexes": [1]}  # fmt: skip
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens))
    else:
        raise ValueError(f"not a Qwen VL family: {family!r}")
    pixels = 56 * 56
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": pixels, "longest_edge": pixels},
                                               patch_size=14, merge_size=2, temporal_patch_size=2)  # fmt: skip
    if not with_processor:  # the model, its tokenizer and image processor, without the torchvision-bound processor
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        image_processor.save_pretrained(out)
        return out
    try:
        processor = Qwen2VLProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_VL_TEMPLATE
        )
    except (AttributeError, ImportError, ValueError) as exc:
        raise TorchvisionMissing(
            f"the {family} processor needs a video processor, which needs torchvision ({type(exc).__name__}: {exc})"
        ) from exc
    return _finish(model, processor, Path(out_dir), preset)


def build_mllama(out_dir: str | Path, preset: str = "atomthink-v1", seed: int = 0) -> Path:
    """A tiny Llama-3.2-Vision (Mllama): one 28x28 tile, a cross-attention layer between two self-attention ones."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    torch.manual_seed(seed)
    tokenizer = _char_tokenizer(LLAMA_SPECIAL, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                pad_token="<|finetune_right_pad_id|>", unk_token="<|end_of_text|>")  # fmt: skip
    tokenizer.chat_template = MLLAMA_TEMPLATE
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
              "attention_heads": 2, "image_size": 28, "patch_size": 14, "max_num_tiles": 1,
              "intermediate_layers_indices": [0], "vision_output_dim": 64,
              "supported_aspect_ratios": [[1, 1]]}  # fmt: skip
    text = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
            "cross_attention_layers": [1], "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 2048, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": False}  # fmt: skip
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.get_vocab()["<|image|>"])
    model = MllamaForConditionalGeneration(config)
    image_processor = MllamaImageProcessorPil(size={"height": 28, "width": 28}, max_image_tiles=1)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=MLLAMA_TEMPLATE)
    return _finish(model, processor, Path(out_dir), preset)


def build_llava(out_dir: str | Path, preset: str = "atomthink-v1", seed: int = 0) -> Path:
    """The project's tiny LLaVA (``research.modeling.tiny``), declaring ``preset``."""
    out = build_tiny_policy(out_dir, seed=seed)
    (out / PRESET_FILE).write_text(json.dumps({"prompt_preset": preset}, indent=2) + "\n")
    return out


def build_policy_family(family: str, out_dir: str | Path, preset: str = "atomthink-v1", seed: int = 0) -> Path:
    """A tiny random-weight checkpoint of ``family`` (one of ``POLICY_FAMILIES``)."""
    if family == "llava":
        return build_llava(out_dir, preset, seed)
    if family in ("qwen2-vl", "qwen2.5-vl"):
        return build_qwen_vl(out_dir, family, preset, seed)
    if family == "mllama":
        return build_mllama(out_dir, preset, seed)
    raise ValueError(f"unknown family {family!r}; known: {', '.join(POLICY_FAMILIES)}")


def build_qwen2_prm(out_dir: str | Path, tokenizer: Any, kind: str = "math-psa", seed: int = 0) -> Path:
    """A tiny Qwen2 PRM over ``tokenizer`` (a real vocabulary, so that the preset's label and tag tokens are what
    they are on the released PRMs): ``math-psa`` a causal LM, ``qwen-prm`` a ``Qwen2ForProcessRewardModel``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from workers.backends.prm_models import Qwen2ProcessRewardModel

    torch.manual_seed(seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"
    if tokenizer.eos_token is None:
        tokenizer.eos_token = "<|endoftext|>"
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "math-psa":
        model: Any = Qwen2ForCausalLM(config)
    elif kind == "qwen-prm":
        config.architectures = ["Qwen2ForProcessRewardModel"]
        model = Qwen2ProcessRewardModel(config)
    else:
        raise ValueError(f"unknown PRM kind {kind!r}: math-psa or qwen-prm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / PRESET_FILE).write_text(json.dumps({"prm_preset": kind}, indent=2) + "\n")
    return out
