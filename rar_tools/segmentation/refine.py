"""Mask post-processing that needs no model: the guided filter (He, Sun and Tang, 2010).

A class activation map is coarse (one value per CLIP patch, 14x14 for ViT-B/16) and blurry once
upsampled. The guided filter fits, in every window, the map as a linear function of the image's grey
levels, q = a * I + b, and averages the fits: edges of the map move onto the image's edges, flat
areas stay flat. It is CaR's dense-CRF step replaced by something cheap (two box filters per term, in
numpy), and it is the one post-processing step here when no SAM checkpoint is given.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT_EPS = 1e-2  # regularisation: larger values smooth more, smaller ones follow edges more


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """The mean over each (2 radius + 1)-square window, windows clipped at the borders."""
    padded = np.pad(values, ((1, 0), (1, 0)))
    summed = padded.cumsum(0).cumsum(1)
    height, width = values.shape
    rows, cols = np.arange(height), np.arange(width)
    top, bottom = np.clip(rows - radius, 0, height), np.clip(rows + radius + 1, 0, height)
    left, right = np.clip(cols - radius, 0, width), np.clip(cols + radius + 1, 0, width)
    total = summed[bottom][:, right] - summed[top][:, right] - summed[bottom][:, left] + summed[top][:, left]
    area = np.outer(bottom - top, right - left)
    return total / area


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float = DEFAULT_EPS) -> np.ndarray:
    """`source` filtered with the edges of `guide` (both 2-D, same shape, guide in 0..1)."""
    guide, source = guide.astype(np.float64), source.astype(np.float64)
    mean_guide, mean_source = box_mean(guide, radius), box_mean(source, radius)
    variance = box_mean(guide * guide, radius) - mean_guide**2
    covariance = box_mean(guide * source, radius) - mean_guide * mean_source
    slope = covariance / (variance + eps)
    offset = mean_source - slope * mean_guide
    return box_mean(slope, radius) * guide + box_mean(offset, radius)


def grey_levels(image: Image.Image) -> np.ndarray:
    """An image's grey levels in 0..1."""
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def refine_map(image: Image.Image, soft: np.ndarray) -> np.ndarray:
    """A soft map (0..1, the image's size) snapped to the image's edges by the guided filter, kept
    in 0..1. The window is about 1/16 of the image's longer side."""
    radius = max(1, round(max(soft.shape) / 16))
    return np.clip(guided_filter(grey_levels(image), soft, radius), 0.0, 1.0)
