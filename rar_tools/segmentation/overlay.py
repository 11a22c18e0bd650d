"""A picture of segmentation masks: each mask tinted in its own colour over the image, with its label."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from rar_tools.segmentation.rle import Rle, decode

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (0, 128, 128),
)
OVERLAY_SIDE = 768  # longest side of the picture
MAX_OVERLAY_BYTES = 2 * 2**20  # a larger PNG is redrawn at half the side
MIN_OVERLAY_SIDE = 64
TINT = 0.45


def shown_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled down so that its longer side is at most `max_side`."""
    scale = min(1.0, max_side / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def draw_overlay(image: Image.Image, masks: Sequence[tuple[str, Rle]], max_side: int) -> Image.Image:
    """`image` at most `max_side` pixels a side, each (label, RLE of a full-size mask) tinted over it
    (masks are decoded one at a time)."""
    size = shown_size(image.size, max_side)
    pixels = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    labels = []
    for index, (label, mask) in enumerate(masks):
        colour = np.asarray(PALETTE[index % len(PALETTE)], dtype=np.float64)
        shown = np.asarray(Image.fromarray(decode(mask)).resize(size, Image.Resampling.NEAREST))
        pixels[shown] = (1 - TINT) * pixels[shown] + TINT * colour
        rows, cols = np.nonzero(shown)
        if rows.size:
            labels.append((label, (int(cols.min()) + 2, int(rows.min()) + 2), tuple(int(c) for c in colour)))
    picture = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for label, corner, colour in labels:
        draw.text(corner, label, fill=colour, stroke_width=1, stroke_fill=(0, 0, 0))
    return picture


def overlay_png(image: Image.Image, masks: Sequence[tuple[str, Rle]], max_side: int = OVERLAY_SIDE) -> bytes:
    """The overlay as PNG bytes, within `MAX_OVERLAY_BYTES` (halving the side until it fits)."""
    side = max_side
    while True:
        buffer = io.BytesIO()
        draw_overlay(image, masks, side).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_OVERLAY_BYTES or side <= MIN_OVERLAY_SIDE:
            return buffer.getvalue()
        side //= 2
