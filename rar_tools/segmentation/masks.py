"""Masks as data: scaling soft maps, boxes and areas of binary masks, and CaR's visual prompts made
from a mask (rather than a box): a red outline, the background blurred, the background greyed."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from rar_tools.regions import PROMPT_COLOUR, Frame, blur_outside_mask, grey_outside_mask

MaskPrompt = Literal["outline", "blur", "grey"]
MASK_PROMPTS: tuple[MaskPrompt, ...] = ("outline", "blur", "grey")


def resize_map(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D float map resized (bilinear) to `size` (width, height)."""
    image = Image.fromarray(np.asarray(soft, dtype=np.float32))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)


def normalised(values: np.ndarray) -> np.ndarray:
    """`values` divided by their maximum (all zeros stay zeros); negative values become 0."""
    values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    peak = values.max() if values.size else 0.0
    return values / peak if peak > 0 else values


def mask_box(mask: np.ndarray) -> list[float] | None:
    """The box (x1, y1, x2, y2; x2 and y2 exclusive, in pixels) around a mask's pixels, or None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def frame_part(view_map: np.ndarray, frame: Frame, size: tuple[int, int]) -> np.ndarray:
    """The part of a square view's map (the view of `frame`) that covers the image of `size`
    (width, height), resized to that size: a view map back in the image's pixels."""
    scale = view_map.shape[0] / frame.side
    width, height = size
    left, top = -frame.left * scale, -frame.top * scale
    box = (left, top, left + width * scale, top + height * scale)
    image = Image.fromarray(np.asarray(view_map, dtype=np.float32))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR, box=box), dtype=np.float64)


def outline(image: Image.Image, mask: Image.Image, width: int | None = None) -> Image.Image:
    """A copy of `image` with the outline of `mask` ('L') drawn in red, about 1/100 of its side thick."""
    width = width or max(1, round(max(image.size) / 100))
    grown = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * width + 1))) > 0
    edge = grown & ~(np.asarray(mask) > 0)
    out = image.copy()
    out.paste(PROMPT_COLOUR, mask=grey_mask(edge))
    return out


def grey_mask(mask: np.ndarray) -> Image.Image:
    """A boolean array as an 'L' image, white where true."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))


def mask_prompt(image: Image.Image, mask: np.ndarray, kind: MaskPrompt, blur_radius: float) -> Image.Image:
    """CaR's visual prompt `kind` for a boolean `mask` of `image`'s size."""
    pixels = grey_mask(mask)
    if kind == "outline":
        return outline(image, pixels)
    if kind == "blur":
        return blur_outside_mask(image, pixels, blur_radius)
    if kind == "grey":
        return grey_outside_mask(image, pixels)
    raise ValueError(f"unknown mask prompt {kind!r}; use one of {', '.join(MASK_PROMPTS)}")
