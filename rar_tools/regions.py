"""Regions of an image, as pure image functions: boxes, RAR crops, DynRefer views, CaR visual prompts.

Coordinates are pixels of the image given, (x1, y1, x2, y2) with x2 and y2 exclusive. Every view is a
square of `side` pixels: the region's frame is cut out (padded with CLIP's mean colour where it leaves
the image, so no stretching) and resized, which keeps CLIP's centre crop from cutting anything off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rar_tools.errors import RegionError

PromptKind = Literal["ellipse", "blur", "grey"]
PROMPT_KINDS: tuple[PromptKind, ...] = ("ellipse", "blur", "grey")
# CLIP's normalisation mean as an RGB colour: padding becomes ~0 after normalisation.
PAD_COLOUR = (122, 116, 104)
PROMPT_COLOUR = (255, 0, 0)
VIEW_STEPS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # DynRefer's t = 0.1 ... 1.0
MIN_MARGIN, MAX_MARGIN = 0.1, 1.0
HASH_SIDE, HASH_BITS = 224, 8


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Box:
        """This box moved by (dx, dy), then scaled about the origin."""
        return Box((self.x1 + dx) * scale, (self.y1 + dy) * scale, (self.x2 + dx) * scale, (self.y2 + dy) * scale)


def whole_image(size: tuple[int, int]) -> Box:
    """The box B = (0, 0, W, H) of an image of `size` (W, H)."""
    return Box(0.0, 0.0, float(size[0]), float(size[1]))


def check_box(box: Sequence[float], size: tuple[int, int], normalized: bool = False, min_side: float = 4.0) -> Box:
    """A caller's box as pixels, clipped to the image; refuses malformed, empty, outside or tiny boxes."""
    width, height = size
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise RegionError(f"a box is 4 numbers (x1, y1, x2, y2), got {box!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise RegionError(f"a box is 4 numbers (x1, y1, x2, y2), got {box!r}") from exc
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise RegionError(f"box {box!r} has a value that is not a finite number")
    if x2 <= x1 or y2 <= y1:
        raise RegionError(f"box {box!r} has no area: give (x1, y1, x2, y2) with x2 > x1 and y2 > y1")
    if normalized:
        if min(x1, y1) < 0 or max(x2, y2) > 1:
            raise RegionError(f"normalised box {box!r} must lie within 0..1; give pixels with box_normalized off")
        x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
    clipped = Box(max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if clipped.width <= 0 or clipped.height <= 0:
        raise RegionError(f"box {box!r} lies outside the {width}x{height} image")
    if clipped.width < min_side or clipped.height < min_side:
        raise RegionError(
            f"box {box!r} is {round(clipped.width, 2):g}x{round(clipped.height, 2):g} pixels inside the "
            f"{width}x{height} image; "
            f"the minimum is {min_side:g} pixels a side"
        )
    return clipped


def adaptive_margin(box: Box, size: tuple[int, int]) -> float:
    """Context on each side, relative to the box's longer side: more for boxes small in the image.

    0.1 / sqrt(area share), kept within 0.1..1.0: a box of 1 % of the image gets 1.0 (three times its
    side), one of 25 % gets 0.2, the whole image 0.1.
    """
    share = (box.width * box.height) / (size[0] * size[1])
    return min(MAX_MARGIN, max(MIN_MARGIN, MIN_MARGIN / math.sqrt(share)))


@dataclass(frozen=True)
class Frame:
    """A square window of the image in whole pixels (it may reach past the edges) that becomes a view."""

    left: int
    top: int
    side: int

    def to_view(self, box: Box, view_side: int) -> Box:
        """`box` in the coordinates of this frame resized to `view_side` pixels."""
        return box.shifted(-self.left, -self.top, view_side / self.side)


def square_frame(box: Box, size: tuple[int, int], margin: float) -> Frame:
    """A square around `box`, `margin` of its longer side wider on each side, kept inside the image
    where it fits (shifted, not shrunk), so the box always lies wholly inside it."""
    side = max(1, math.ceil(max(box.width, box.height) * (1 + 2 * margin)))
    cx, cy = box.centre
    return Frame(
        round(clamp_start(cx - side / 2, side, size[0])), round(clamp_start(cy - side / 2, side, size[1])), side
    )


def clamp_start(start: float, side: float, extent: float) -> float:
    """`start` moved so that [start, start + side] stays within [0, extent], or covers it when larger."""
    low, high = min(0.0, extent - side), max(0.0, extent - side)
    return min(max(start, low), high)


def cut_frame(image: Image.Image, frame: Frame, view_side: int) -> Image.Image:
    """The frame's pixels as a `view_side` square; parts outside the image are PAD_COLOUR."""
    left, top, side = frame.left, frame.top, frame.side
    inside = (max(left, 0), max(top, 0), min(left + side, image.width), min(top + side, image.height))
    canvas = Image.new("RGB", (side, side), PAD_COLOUR)
    canvas.paste(image.crop(inside), (inside[0] - left, inside[1] - top))
    return canvas.resize((view_side, view_side), Image.Resampling.BICUBIC)


def box_mask(size: tuple[int, int], box: Box) -> Image.Image:
    """An 'L' mask of `size`, white inside `box`."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle([box.x1, box.y1, box.x2 - 1, box.y2 - 1], fill=255)
    return mask


def blur_outside(image: Image.Image, box: Box, radius: float) -> Image.Image:
    """`image` with everything outside `box` Gaussian-blurred (`radius` is the blur's sigma in pixels)."""
    return blur_outside_mask(image, box_mask(image.size, box), radius)


def blur_outside_mask(image: Image.Image, mask: Image.Image, radius: float) -> Image.Image:
    """`image` blurred wherever the 'L' `mask` is black."""
    return Image.composite(image, image.filter(ImageFilter.GaussianBlur(radius)), mask)


def grey_outside(image: Image.Image, box: Box) -> Image.Image:
    """`image` with everything outside `box` turned to greyscale."""
    return grey_outside_mask(image, box_mask(image.size, box))


def grey_outside_mask(image: Image.Image, mask: Image.Image) -> Image.Image:
    """`image` in greyscale wherever the 'L' `mask` is black."""
    return Image.composite(image, image.convert("L").convert("RGB"), mask)


def draw_ellipse(image: Image.Image, box: Box, width: int | None = None) -> Image.Image:
    """A copy of `image` with a red ellipse around `box` (the ellipse through the box's corners)."""
    out = image.copy()
    cx, cy = box.centre
    rx, ry = box.width / math.sqrt(2), box.height / math.sqrt(2)
    line = width or max(2, round(max(image.size) / 150))
    ImageDraw.Draw(out).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=PROMPT_COLOUR, width=line)
    return out


def visual_prompt(image: Image.Image, box: Box, kind: PromptKind, blur_radius: float) -> Image.Image:
    """CaR's visual prompts: a red ellipse around the box, or the background blurred or greyed."""
    if kind == "ellipse":
        return draw_ellipse(image, box)
    if kind == "blur":
        return blur_outside(image, box, blur_radius)
    if kind == "grey":
        return grey_outside(image, box)
    raise RegionError(f"unknown visual prompt {kind!r}; use one of {', '.join(PROMPT_KINDS)}")


def context_view(image: Image.Image, box: Box, side: int, margin: float | None = None) -> tuple[Image.Image, Box]:
    """The box with context around it as a `side` square, and the box in that view's coordinates.
    `margin` None means `adaptive_margin`."""
    frame = square_frame(box, image.size, adaptive_margin(box, image.size) if margin is None else margin)
    return cut_frame(image, frame, side), frame.to_view(box, side)


def rar_crop(
    image: Image.Image, box: Box, side: int = 224, margin: float | None = None, blur_radius: float = 4.0
) -> Image.Image:
    """RAR's region view: the box with context, everything outside the box blurred, as a `side` square."""
    view, inner = context_view(image, box, side, margin)
    return blur_outside(view, inner, blur_radius)


def prompted_view(
    image: Image.Image,
    box: Box,
    kind: PromptKind,
    side: int = 224,
    margin: float | None = None,
    blur_radius: float = 4.0,
) -> Image.Image:
    """The box with context and one CaR visual prompt applied, as a `side` square."""
    view, inner = context_view(image, box, side, margin)
    return visual_prompt(view, inner, kind, blur_radius)


# -- DynRefer views ------------------------------------------------------------------------------
def interpolate_box(box: Box, size: tuple[int, int], t: float) -> Box:
    """DynRefer's view box b_t = b + t (B - b): t = 0 is the box, t = 1 the whole image."""
    whole = whole_image(size)
    return Box(*(b + t * (w - b) for b, w in zip(box.as_list(), whole.as_list())))


def view_image(image: Image.Image, box: Box, side: int) -> Image.Image:
    """A view box itself (no extra context) as a `side` square, padded rather than stretched."""
    return cut_frame(image, square_frame(box, image.size, 0.0), side)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `dct_matrix(n) @ x` is the DCT of a length-n signal."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix


def perceptual_hash(image: Image.Image, basis: np.ndarray | None = None) -> np.ndarray:
    """64-bit pHash: grey, 224x224, 2-D DCT, the top-left 8x8 (lowest) frequencies, bit = above their median.

    The median, as in the usual pHash (imagehash), not the mean: the DC coefficient (224 times the mean
    grey) dwarfs the others, so above-the-mean leaves nearly every bit 0 and views hard to tell apart
    (on a smooth test image its mirror image differed in 5 bits of 64 with the mean, 36 with the median).
    `basis` (`hash_basis()`) may be passed in when hashing many views.
    """
    grey = np.asarray(image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR), np.float64)
    basis = hash_basis() if basis is None else basis
    low = basis @ grey @ basis.T
    return (low > np.median(low)).ravel()


def hash_basis() -> np.ndarray:
    """The 8 lowest-frequency rows of the 224-point DCT."""
    return dct_matrix(HASH_SIDE)[:HASH_BITS]


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Number of differing bits between two hashes."""
    return int(np.count_nonzero(a != b))


def choose_context_steps(image: Image.Image, box: Box, count: int, steps: Sequence[float] = VIEW_STEPS) -> list[float]:
    """DynRefer's view choice: the `count` steps t whose view differs most from the tight view,
    by Hamming(pHash(b_0), pHash(b_t)) / t; returned in increasing t."""
    if count <= 0:
        return []
    basis = hash_basis()
    tight = perceptual_hash(image.crop(pixel_bounds(box)), basis)
    scored = []
    for t in steps:
        view = interpolate_box(box, image.size, t)
        scored.append((hamming(tight, perceptual_hash(image.crop(pixel_bounds(view)), basis)) / t, -t))
    best = sorted(scored, reverse=True)[:count]
    return sorted(-neg_t for _, neg_t in best)


def pixel_bounds(box: Box) -> tuple[int, int, int, int]:
    """Integer crop bounds covering `box`."""
    return math.floor(box.x1), math.floor(box.y1), math.ceil(box.x2), math.ceil(box.y2)


def view_weights(context_count: int, tight_weight: float) -> list[float]:
    """Fusion weights: `tight_weight` for the tight view, the rest shared equally by the context views."""
    if context_count == 0:
        return [1.0]
    return [tight_weight] + [(1.0 - tight_weight) / context_count] * context_count
