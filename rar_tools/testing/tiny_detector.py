"""A tiny, randomly initialised OWLv2 detector in the real on-disk format, built fully offline.

`write_tiny_owlv2(dir)` saves a model and its processor with `save_pretrained`; they load with
`AutoModelForZeroShotObjectDetection` / `AutoProcessor` like a downloaded checkpoint. The CLIP-style
tokenizer has one token per byte (with and without CLIP's `</w>` word ending) and no merges: small,
deterministic, and able to encode any text. The end-of-text token has the highest id, as OWL's text
pooling (argmax over token ids) expects. The box head's last layer is zeroed, so every predicted box
is the patch-grid prior (one box per patch): valid boxes whatever the random weights. About 0.4 MB.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor
from transformers.convert_slow_tokenizer import bytes_to_unicode

IMAGE_SIZE, PATCH_SIZE = 64, 16  # 4 x 4 patches: 16 boxes
TEXT_LENGTH = 16  # OWL's query length
TINY_SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def byte_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes: ids 0-255 the bytes, 256-511 the bytes ending a word,
    then start and end of text. Padding is '!' (id 0), as in OWL's own tokenizer."""
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token="!", model_max_length=TEXT_LENGTH)


def write_tiny_owlv2(out_dir: Path, seed: int = 0) -> Path:
    """An OWLv2 checkpoint with 64 px images and 32-wide text and vision towers."""
    tokenizer = byte_tokenizer()
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer=tokenizer
    )
    text_config = {
        **TINY_SIZES,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": TEXT_LENGTH,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision_config = {**TINY_SIZES, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE}
    config = Owlv2Config(text_config=text_config, vision_config=vision_config, projection_dim=32)
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
