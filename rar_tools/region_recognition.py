"""What CLIP and the ranker see of a query, whole image or region, and CaR's candidate filter.

A `Query` holds the views of one image or box that CLIP embeds (with their fusion weights) and, with
the CaR filter on, its visually prompted views. `encode_queries` embeds the views of many queries in
one batched encoder pass, which is what makes many boxes of one image cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rar_tools.limits import RankerView
from rar_tools.regions import (
    PROMPT_KINDS,
    Box,
    choose_context_steps,
    draw_ellipse,
    interpolate_box,
    prompted_view,
    rar_crop,
    view_image,
    view_weights,
)
from rar_tools.retrieval import LOGIT_SCALE, Retrieval
from rar_tools.validation import check_ranker_view, check_views

if TYPE_CHECKING:
    from rar_tools.encoder import ClipEncoder

# CaR's three visual prompts are a red ellipse, a blurred and a greyed background; the blurred one is
# RAR's crop, the tight view itself, so only the other two are made and embedded again.
EXTRA_PROMPTS = tuple(kind for kind in PROMPT_KINDS if kind != "blur")


@dataclass(frozen=True)
class RegionOptions:
    """Per-call region options; checked on creation."""

    box_normalized: bool = False
    views: int = 1
    car_filter: bool = False
    ranker_view: RankerView = "crop"
    ranker_context: bool = False

    def __post_init__(self) -> None:
        check_views(self.views)
        check_ranker_view(self.ranker_view)


@dataclass(frozen=True)
class ViewConfig:
    """How region views are made (from `Settings`)."""

    side: int = 224
    margin: float | None = None
    blur_radius: float = 4.0
    tight_weight: float = 0.5


@dataclass(frozen=True)
class Query:
    """One thing to recognise: its CLIP views with fusion weights, and optional CaR prompt views.

    `steps` holds DynRefer's t of each view (0 for the tight view); `box` is None for a whole image.
    """

    box: Box | None
    views: tuple[Image.Image, ...]
    steps: tuple[float, ...]
    weights: tuple[float, ...]
    prompts: tuple[Image.Image, ...] = ()
    embeddings: np.ndarray | None = field(default=None, compare=False)
    prompt_embeddings: np.ndarray | None = field(default=None, compare=False)

    @property
    def tight_embedding(self) -> np.ndarray:
        """The embedding of the first (tight, or whole-image) view."""
        if self.embeddings is None:
            raise ValueError("the query has not been encoded yet")
        return self.embeddings[0]

    @property
    def prompted_embeddings(self) -> np.ndarray:
        """CaR's three prompted views embedded: the blurred-background one (the tight view), then the rest."""
        if self.prompt_embeddings is None:
            raise ValueError("the query has not been encoded yet")
        return np.vstack([self.tight_embedding[None], self.prompt_embeddings])


def whole_image_query(image: Image.Image) -> Query:
    """The query for a whole image: the image itself, one view."""
    return Query(box=None, views=(image,), steps=(0.0,), weights=(1.0,))


def region_query(image: Image.Image, box: Box, views: int, car_filter: bool, config: ViewConfig) -> Query:
    """The query for a box: RAR's blurred crop as the tight view, plus `views - 1` DynRefer context
    views (those whose perceptual hash differs most from the box's), plus CaR's other prompted views."""
    tight = rar_crop(image, box, config.side, config.margin, config.blur_radius)
    steps = choose_context_steps(image, box, views - 1)
    context = [view_image(image, interpolate_box(box, image.size, t), config.side) for t in steps]
    prompts = (
        tuple(prompted_view(image, box, kind, config.side, config.margin, config.blur_radius) for kind in EXTRA_PROMPTS)
        if car_filter
        else ()
    )
    return Query(
        box=box,
        views=(tight, *context),
        steps=(0.0, *steps),
        weights=tuple(view_weights(len(steps), config.tight_weight)),
        prompts=prompts,
    )


def encode_queries(encoder: ClipEncoder, queries: Sequence[Query]) -> list[Query]:
    """The queries with their views (and prompts) embedded, all in one batched encoder pass."""
    images = [im for q in queries for im in (*q.views, *q.prompts)]
    embeddings = encoder.encode_images(images)
    encoded, start = [], 0
    for q in queries:
        middle, end = start + len(q.views), start + len(q.views) + len(q.prompts)
        encoded.append(replace(q, embeddings=embeddings[start:middle], prompt_embeddings=embeddings[middle:end]))
        start = end
    return encoded


def car_filter(
    prompt_embeddings: np.ndarray, label_embeddings: np.ndarray, threshold: float, scale: float = LOGIT_SCALE
) -> tuple[list[int], int]:
    """CaR's iterative filter: indices of the labels kept, and the rounds it took.

    Each round scores the remaining labels on every prompted view (softmax over the remaining labels
    of CLIP-scaled similarities, averaged over the prompts), keeps those at or above `threshold`, and
    stops when the set no longer changes. The best label survives when none passes.
    """
    keep = list(range(len(label_embeddings)))
    rounds = 0
    while keep:
        rounds += 1
        logits = scale * prompt_embeddings.astype(np.float64) @ label_embeddings[keep].astype(np.float64).T
        logits -= logits.max(axis=1, keepdims=True)
        shares = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        probability = shares.mean(axis=0)
        passed = [index for index, p in zip(keep, probability) if p >= threshold]
        passed = passed or [keep[int(np.argmax(probability))]]
        if passed == keep:
            break
        keep = passed
    return keep, rounds


def filter_retrievals(
    encoder: ClipEncoder, queries: Sequence[Query], found: Sequence[Retrieval], threshold: float
) -> tuple[list[Retrieval], list[tuple[list[str], int]]]:
    """Each query's retrieval restricted to the labels `car_filter` keeps, with the labels dropped and
    the rounds taken. The candidates' label texts of all queries are encoded in one batch."""
    names = sorted({c.label for f in found for c in f.candidates})
    texts = dict(zip(names, encoder.encode_labels(names))) if names else {}
    kept, filtering = [], []
    for query, retrieval in zip(queries, found):
        labels = [c.label for c in retrieval.candidates]
        if len(labels) < 2:
            kept.append(retrieval)
            filtering.append(([], 0))
            continue
        keep, rounds = car_filter(query.prompted_embeddings, np.stack([texts[label] for label in labels]), threshold)
        kept.append(retrieval.restricted(keep))
        filtering.append(([label for i, label in enumerate(labels) if i not in keep], rounds))
    return kept, filtering


def ranker_images(
    image: Image.Image, box: Box, view: RankerView, with_context: bool, config: ViewConfig, side: int
) -> tuple[Image.Image, Image.Image | None]:
    """What the ranker sees of a region: RAR's blurred crop or the context view with a red ellipse,
    at `side` pixels; optionally, second, the whole image (at most `side` long) with the ellipse."""
    if view == "crop":
        shown = rar_crop(image, box, side, config.margin, config.blur_radius * side / config.side)
    else:
        shown = prompted_view(image, box, "ellipse", side, config.margin)
    return shown, whole_image_marked(image, box, side) if with_context else None


def whole_image_marked(image: Image.Image, box: Box, max_side: int) -> Image.Image:
    """The whole image, its longer side at most `max_side`, with a red ellipse around `box`."""
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        size = (max(1, math.floor(image.width * scale)), max(1, math.floor(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        box = box.shifted(0, 0, scale)
    return draw_ellipse(image, box)
