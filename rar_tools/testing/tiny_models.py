"""Write tiny, randomly initialised checkpoints in the real on-disk formats.

    python -m rar_tools.testing.tiny_models OUT_DIR

writes `OUT_DIR/clip` (open_clip, load it as `local-dir:OUT_DIR/clip`), `OUT_DIR/mllm` (a Qwen2-VL
family model), `OUT_DIR/llava` (a LLaVA-1.5 style model), `OUT_DIR/detector` (an OWLv2 detector) and
`OUT_DIR/sam` (a SAM mask model), all loadable with the transformers classes. Their labels are
meaningless: they exist so tests, CI and examples exercise the same loading and inference code as real
weights, fully offline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rar_tools.testing.marker import write_marker

TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        # The vocabulary size must match open_clip's bundled BPE tokenizer.
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}


OPENAI_PREPROCESS = TINY_CLIP_CONFIG["preprocess_cfg"]


def write_tiny_clip(out_dir: Path, seed: int = 0) -> Path:
    """An open_clip `local-dir:` checkpoint: `open_clip_config.json` + `open_clip_model.safetensors`."""
    return write_clip(out_dir, TINY_CLIP_CONFIG, "clip", seed)


def write_random_clip(out_dir: Path, model_name: str = "ViT-B-16", seed: int = 0) -> Path:
    """An open_clip `local-dir:` checkpoint of a built-in architecture (real size) with random weights,
    OpenAI's preprocessing: the same speed and memory as the real model, meaningless embeddings."""
    import open_clip

    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ValueError(f"open_clip has no model configuration named {model_name!r}")
    config = {"model_cfg": model_cfg, "preprocess_cfg": OPENAI_PREPROCESS}
    return write_clip(out_dir, config, f"clip {model_name}", seed)


def write_clip(out_dir: Path, config: dict, role: str, seed: int) -> Path:
    """Build `open_clip.CLIP(**config["model_cfg"])` with seeded random weights and save it as a folder."""
    import open_clip
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**config["model_cfg"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    write_marker(out_dir, role)
    return out_dir


def write_tiny_models(out_dir: Path) -> dict[str, Path]:
    """All tiny checkpoints under `out_dir`; returns their folders by role."""
    from rar_tools.testing.tiny_detector import write_tiny_owlv2
    from rar_tools.testing.tiny_mllm import write_tiny_llava, write_tiny_qwen2vl
    from rar_tools.testing.tiny_sam import write_tiny_sam

    out_dir = Path(out_dir)
    return {
        "clip": write_tiny_clip(out_dir / "clip"),
        "mllm": write_tiny_qwen2vl(out_dir / "mllm"),
        "llava": write_tiny_llava(out_dir / "llava"),
        "detector": write_tiny_owlv2(out_dir / "detector"),
        "sam": write_tiny_sam(out_dir / "sam"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    paths = write_tiny_models(args.out_dir)
    for role, path in paths.items():
        print(f"{role}: {path.resolve()}", file=sys.stderr)
    print(
        f"serve with: rar-tools serve --clip-model local-dir:{paths['clip'].resolve()} "
        f"--ranker-model {paths['mllm'].resolve()} --detector-model {paths['detector'].resolve()}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
