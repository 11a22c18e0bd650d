"""A tiny, randomly initialised SAM (transformers `SamModel` + `SamProcessor`) in the real on-disk format:
64-pixel inputs, an 8 x 8 embedding grid, 32-wide towers, about 0.3 MB. It loads with
`SamModel.from_pretrained` like a downloaded checkpoint; its masks are meaningless."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

from rar_tools.testing.marker import write_marker

IMAGE_SIZE, PATCH_SIZE, WIDTH = 64, 8, 32


def write_tiny_sam(out_dir: Path, seed: int = 0) -> Path:
    """A SAM checkpoint with its processor under `out_dir`."""
    vision = {
        "hidden_size": WIDTH,
        "output_channels": WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "mlp_dim": 2 * WIDTH,
        "global_attn_indexes": [1],
        "window_size": 4,
        "num_pos_feats": WIDTH // 2,
    }
    prompt = {"hidden_size": WIDTH, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "mask_input_channels": 4}
    decoder = {
        "hidden_size": WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_dim": 2 * WIDTH,
        "iou_head_hidden_dim": WIDTH,
    }
    config = SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    mask_side = IMAGE_SIZE // 4
    processor = SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": IMAGE_SIZE},
            pad_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            mask_size={"longest_edge": mask_side},
            mask_pad_size={"height": mask_side, "width": mask_side},
        )
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    write_marker(out_dir, "sam")
    return out_dir
