"""Tiny random checkpoints of the newer multimodal LLM families, in the real on-disk formats.

`write_tiny_qwen25vl(dir)` writes a Qwen2.5-VL model, `write_tiny_qwen3vl(dir)` a Qwen3-VL model
(16 px patches, interleaved mrope, deepstack visual features) and `write_tiny_gemma3(dir)` a Gemma 3
model (SigLIP tower, plain 1-D positions, sliding-window layers, a SentencePiece-style tokenizer whose
merges cross spaces). Each loads with `AutoProcessor` / `AutoModelForImageTextToText` like a
downloaded checkpoint; outputs are meaningless. Each writes well under 5 MB in about a second.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3Processor,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    SiglipVisionConfig,
)

from rar_tools.testing.tiny_mllm import (
    INIT_RANGE,
    QWEN_CHAT_TEMPLATE,
    TEXT_SIZES,
    TINY_QWEN25_VL,
    VISION_TOWER_SIZES,
    VOCAB_SIZE,
    corpus_lines,
    mrope_section,
    qwen_tokenizer,
    save_model,
    token_ids,
    vision_token_ids,
    wrap_tokenizer,
    write_random_qwen25vl,
)

GEMMA_SPECIAL = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
GEMMA_IMAGE_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}

# The shape of Gemma 3's own template: turns as <start_of_turn>ROLE, the assistant is "model",
# images as <start_of_image> (the processor expands it to the image's soft tokens).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<start_of_image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def write_tiny_qwen25vl(out_dir: Path, seed: int = 0) -> Path:
    """A Qwen2.5-VL checkpoint at tiny sizes (window attention in the tower, 2x2 merged 14 px patches)."""
    return write_random_qwen25vl(out_dir, TINY_QWEN25_VL, seed=seed)


def write_tiny_qwen3vl(out_dir: Path, seed: int = 0) -> Path:
    """A Qwen3-VL checkpoint: 16 px patches merged 2x2 (64²..128² px images), interleaved mrope,
    deepstack features from the first vision block."""
    tokenizer = qwen_tokenizer()
    image_range = {"min_pixels": 64 * 64, "max_pixels": 128 * 128}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, **image_range),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    head_dim = TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"]
    text_config = {
        **TEXT_SIZES,
        **token_ids(tokenizer),
        "head_dim": head_dim,
        "vocab_size": len(tokenizer),
        "initializer_range": INIT_RANGE,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": mrope_section(head_dim),
            "mrope_interleaved": True,
        },
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": TEXT_SIZES["hidden_size"],
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
        "initializer_range": INIT_RANGE,
    }
    config = Qwen3VLConfig(
        text_config=text_config, vision_config=vision_config, tie_word_embeddings=True, **vision_token_ids(tokenizer)
    )
    return save_model(Qwen3VLForConditionalGeneration, config, processor, out_dir, seed)


def gemma_tokenizer():
    """A SentencePiece-style BPE like Gemma's: spaces become '▁', no pre-tokenizer (merges may cross
    words), bytes outside the vocabulary fall back to <0xNN> tokens, <bos> is prepended."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{value:02X}>" for value in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE + len(byte_tokens),
        special_tokens=GEMMA_SPECIAL + byte_tokens,
        max_token_length=12,
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    return wrap_tokenizer(
        tok,
        bos_token="<bos>",
        eos_token="<end_of_turn>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=GEMMA_IMAGE_TOKENS,
    )


def write_tiny_gemma3(out_dir: Path, seed: int = 0) -> Path:
    """A Gemma 3 checkpoint: 56 px SigLIP tower with 14 px patches pooled to 4 image tokens, a text
    model whose sliding-window layers (window 16) alternate with full-attention ones."""
    tokenizer = gemma_tokenizer()
    image_size, patch_size, image_tokens = 56, 14, 4
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        chat_template=GEMMA_CHAT_TEMPLATE,
        image_seq_length=image_tokens,
    )
    vision_config = SiglipVisionConfig(**VISION_TOWER_SIZES, image_size=image_size, patch_size=patch_size)
    text_config = {
        **TEXT_SIZES,
        **token_ids(tokenizer),
        "head_dim": TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"],
        "query_pre_attn_scalar": TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"],
        "vocab_size": len(tokenizer),
        "initializer_range": INIT_RANGE,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"],
    }
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in GEMMA_IMAGE_TOKENS.items()}
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=image_tokens,
        boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"],
        image_token_index=ids["image_token"],
        initializer_range=INIT_RANGE,
        **token_ids(tokenizer),
    )
    return save_model(Gemma3ForConditionalGeneration, config, processor, out_dir, seed)
