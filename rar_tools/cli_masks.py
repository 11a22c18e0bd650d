"""`rar-tools segment --mask-dir DIR`: the masks of a segmentation as PNG files, and the overlay."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any


def add_mask_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask-dir",
        help="write each mask as a PNG (white inside) to this folder, named region<N>-<NN>-<label>.png, "
        "and overlay.png with all masks drawn over the image",
    )


def file_label(label: str) -> str:
    """A label as part of a file name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "label"


def write_masks(tools: Any, args: argparse.Namespace, request: Any, result: Any) -> None:
    """Each mask of `result` as an 8-bit PNG (255 inside), and the overlay, into `--mask-dir`."""
    if not args.mask_dir:
        return
    from PIL import Image

    from rar_tools.segmentation import rle

    folder = Path(args.mask_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for r_index, region in enumerate(result.regions, 1):
        for m_index, mask in enumerate(region.masks, 1):
            pixels = rle.decode(mask.rle.model_dump()).astype("uint8") * 255
            Image.fromarray(pixels).save(folder / f"region{r_index}-{m_index:02d}-{file_label(mask.label)}.png")
            written += 1
    (folder / "overlay.png").write_bytes(tools.segmentation.overlay(request, result))
    print(f"wrote {written} mask PNG(s) and overlay.png to {folder}", file=sys.stderr)
