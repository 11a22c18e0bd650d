"""Tiny, randomly initialised multimodal LLMs in the real on-disk format, built fully offline.

`write_tiny_qwen2vl(dir)` writes a Qwen2-VL model and `write_tiny_llava(dir)` a LLaVA-1.5 style model
(CLIP vision tower + Llama). Both load with `AutoProcessor` / `AutoModelForImageTextToText` exactly
like a downloaded checkpoint. Their outputs are meaningless; they exist so tests and examples run the
same loading and inference code as real weights. Each writes well under 5 MB in about a second.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from rar_tools.bench.data import LABEL_NAMES
from rar_tools.ranking.prompts import ranking_prompt
from rar_tools.testing.marker import write_marker

VOCAB_SIZE = 1024
# Larger than the usual 0.02 so that positions and context visibly change the outputs (tests rely on it).
INIT_RANGE = 0.2
TEXT_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
# A ViT image tower (CLIP, SigLIP) at tiny sizes.
VISION_TOWER_SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}

# Qwen/Qwen2.5-VL-3B-Instruct's sizes (its config.json), for a real-size model with random weights.
QWEN25_VL_3B = {
    "text": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "tie_word_embeddings": True,
}

# The same architecture at tiny sizes: what tests build through `write_random_qwen25vl`.
TINY_QWEN25_VL = {
    "text": {
        **TEXT_SIZES,
        "vocab_size": VOCAB_SIZE,
        "initializer_range": INIT_RANGE,
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
    },
    "vision": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": TEXT_SIZES["hidden_size"],
        "fullatt_block_indexes": [1],
        "initializer_range": INIT_RANGE,
    },
    "tie_word_embeddings": True,
}

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

# The shape of Qwen2-VL's own template: a default system turn, images as vision_start/pad/end.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The shape of llava-hf/llava-1.5's template: "USER: <image>\n... ASSISTANT:", images first.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

NAMES = LABEL_NAMES  # label names the tiny tokenizer is trained on (the benchmark's own list)


def corpus_lines(n_lines: int = 300, seed: int = 0) -> list[str]:
    """A few hundred deterministic lines: ranking prompts, answers and names, to train the tokenizer on."""
    rng = random.Random(seed)
    lines = list(NAMES) + ["You are a helpful assistant.", "USER: ASSISTANT:", "system user assistant"]
    while len(lines) < n_lines:
        names = rng.sample(NAMES, rng.randint(2, 8))
        lines.append(ranking_prompt(names, icl=rng.random() < 0.3))
        rng.shuffle(names)
        lines.append(repr(names))
    return lines


def train_tokenizer(special_tokens: list[str], bos: str | None = None) -> Tokenizer:
    """A byte-level BPE over `corpus_lines()`; special tokens get the first ids; `bos` is prepended."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return tok


def wrap_tokenizer(tok: Tokenizer, **special: str) -> PreTrainedTokenizerFast:
    """The transformers tokenizer around `tok`, with its bos/eos/pad/unk token strings."""
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """bos/eos/pad ids of the tiny tokenizer, for the model config."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def save_model(model_cls, config, processor, out_dir: Path, seed: int, device: str = "cpu", dtype=None) -> Path:
    """Seed, build `model_cls(config)` with random weights on `device` (in `dtype` if given), and
    save it with its processor."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_cls(config).eval()
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.bos_token_id = config.text_config.bos_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    write_marker(out_dir, config.model_type)
    return out_dir


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny byte-level BPE with Qwen's special tokens."""
    return wrap_tokenizer(
        train_tokenizer(QWEN_SPECIAL),
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )


def qwen_processor(processor_cls, tokenizer: PreTrainedTokenizerFast, min_pixels: int, max_pixels: int):
    """A Qwen-VL style processor: 14 px patches merged 2x2, images scaled into [min_pixels, max_pixels]."""
    return processor_cls(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def vision_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The image/video marker token ids of the tiny tokenizer, for a Qwen-VL config."""
    return {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }


def write_tiny_qwen2vl(out_dir: Path, seed: int = 0) -> Path:
    """A Qwen2-VL checkpoint: 14 px patches merged 2x2, 56²..112² px images (4 to 16 image tokens)."""
    tokenizer = qwen_tokenizer()
    processor = qwen_processor(Qwen2VLProcessor, tokenizer, 56 * 56, 112 * 112)
    head_dim = TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"]
    text_config = {
        **TEXT_SIZES,
        **token_ids(tokenizer),
        "vocab_size": len(tokenizer),
        "initializer_range": INIT_RANGE,
        # mrope splits head_dim / 2 rotary frequencies between (time, height, width).
        "rope_parameters": {"rope_type": "default", "mrope_section": mrope_section(head_dim)},
    }
    vision_config = {
        "depth": 2,
        "embed_dim": 32,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "hidden_size": TEXT_SIZES["hidden_size"],
        "initializer_range": INIT_RANGE,
    }
    config = Qwen2VLConfig(
        text_config=text_config, vision_config=vision_config, **vision_token_ids(tokenizer), **token_ids(tokenizer)
    )
    return save_model(Qwen2VLForConditionalGeneration, config, processor, out_dir, seed)


def write_random_qwen25vl(
    out_dir: Path, sizes: dict = QWEN25_VL_3B, device: str = "cpu", dtype=None, seed: int = 0
) -> Path:
    """A Qwen2.5-VL checkpoint with random weights and the given sizes (default: the 3B model's), for
    timing. The tiny tokenizer stands in for Qwen's, so a prompt's text takes a few more tokens."""
    tokenizer = qwen_tokenizer()
    processor = qwen_processor(Qwen2_5_VLProcessor, tokenizer, 56 * 56, 28 * 28 * 1280)
    config = Qwen2_5_VLConfig(
        text_config={**sizes["text"], **token_ids(tokenizer)},
        vision_config=sizes["vision"],
        tie_word_embeddings=sizes["tie_word_embeddings"],
        **vision_token_ids(tokenizer),
    )
    return save_model(Qwen2_5_VLForConditionalGeneration, config, processor, out_dir, seed, device, dtype)


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies into (time, height, width) parts, as Qwen2-VL does."""
    half = head_dim // 2
    time = half - 2 * (3 * half // 8)
    return [time, 3 * half // 8, 3 * half // 8]


def write_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    """A LLaVA-1.5 style checkpoint: 56 px CLIP tower with 14 px patches (16 image tokens) + Llama."""
    tokenizer = wrap_tokenizer(
        train_tokenizer(LLAVA_SPECIAL, bos="<s>"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    image_size, patch_size = 56, 14
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    vision_config = CLIPVisionConfig(
        **VISION_TOWER_SIZES,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
        initializer_range=INIT_RANGE,
    )
    text_config = LlamaConfig(
        **TEXT_SIZES, **token_ids(tokenizer), vocab_size=len(tokenizer), initializer_range=INIT_RANGE
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return save_model(LlavaForConditionalGeneration, config, processor, out_dir, seed)
