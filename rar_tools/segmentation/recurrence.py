"""CLIP as RNN (CaR), training-free: propose a mask per remaining label, classify each proposal, drop
the labels whose own proposal does not convince CLIP, and repeat until the label set is stable.

Everything here works on one square view of the region (CLIP's input side): `propose` gives each
label's Grad-CAM map, upsampled, normalised and (optionally) snapped to the view's edges; `classify`
scores each label on CaR's three visual prompts built from its own proposal's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from rar_tools.retrieval import LOGIT_SCALE
from rar_tools.segmentation.gradcam import CamTower, activation_maps
from rar_tools.segmentation.masks import MASK_PROMPTS, mask_prompt, normalised, resize_map
from rar_tools.segmentation.refine import refine_map

if TYPE_CHECKING:
    from rar_tools.encoder import ClipEncoder


@dataclass(frozen=True)
class CarSettings:
    """The recurrence's knobs (from `Settings`): the mask threshold on a normalised map, the label
    threshold on a proposal's probability, the most rounds, and the blur of the blurred prompt."""

    mask_threshold: float = 0.4
    label_threshold: float = 0.3
    max_rounds: int = 10
    refine: bool = True
    blur_radius: float = 4.0


@dataclass(frozen=True)
class Proposal:
    """One label's mask proposal on the view: its soft map (0..1) and the classifier's probability."""

    label: int
    soft: np.ndarray
    score: float


@dataclass
class Recurrence:
    """The outcome: the surviving labels' last proposals (best first), the labels dropped in each
    round (indices), and the rounds run."""

    proposals: list[Proposal]
    dropped: list[list[int]] = field(default_factory=list)
    rounds: int = 0


def propose(
    encoder: ClipEncoder, cam: CamTower, view: Image.Image, texts: np.ndarray, refine: bool
) -> list[np.ndarray]:
    """Each label's soft map on `view`: Grad-CAM, upsampled to the view, normalised, refined."""
    pixels = encoder.pixels([view]).to(encoder.device, encoder.dtype)
    with encoder.exclusive():
        maps = activation_maps(cam, pixels, torch.from_numpy(texts)).cpu().numpy()
    softs = [normalised(resize_map(m, view.size)) for m in maps]
    return [refine_map(view, soft) if refine else soft for soft in softs]


def classify(
    encoder: ClipEncoder, view: Image.Image, masks: Sequence[np.ndarray], texts: np.ndarray, blur_radius: float
) -> np.ndarray:
    """Each label's probability on its own mask: a softmax over the labels of CLIP-scaled similarities
    on each of CaR's prompts (outline, blurred and greyed background), averaged over the prompts.
    An empty mask shows nothing, so its label gets 0."""
    prompts = [mask_prompt(view, mask, kind, blur_radius) for mask in masks for kind in MASK_PROMPTS]
    embeddings = encoder.encode_images(prompts).astype(np.float64)
    logits = LOGIT_SCALE * embeddings @ texts.astype(np.float64).T
    logits -= logits.max(axis=1, keepdims=True)
    shares = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    per_mask = shares.reshape(len(masks), len(MASK_PROMPTS), len(texts)).mean(axis=1)
    own = np.diagonal(per_mask).copy()
    own[[not mask.any() for mask in masks]] = 0.0
    return own


def segment_view(
    encoder: ClipEncoder, cam: CamTower, view: Image.Image, texts: np.ndarray, settings: CarSettings
) -> Recurrence:
    """The recurrence on one view for label embeddings `texts` (unit rows): rounds of proposing and
    classifying until no label is dropped (or `max_rounds`); the best label survives when all fail."""
    remaining = list(range(len(texts)))
    outcome = Recurrence(proposals=[])
    while outcome.rounds < settings.max_rounds:
        outcome.rounds += 1
        softs = propose(encoder, cam, view, texts[remaining], settings.refine)
        masks = [soft >= settings.mask_threshold for soft in softs]
        scores = classify(encoder, view, masks, texts[remaining], settings.blur_radius)
        passed = [i for i, score in zip(remaining, scores) if score >= settings.label_threshold]
        passed = passed or [remaining[int(np.argmax(scores))]]
        outcome.dropped.append([i for i in remaining if i not in passed])
        proposals = {i: Proposal(i, soft, float(score)) for i, soft, score in zip(remaining, softs, scores)}
        outcome.proposals = sorted((proposals[i] for i in passed), key=lambda p: -p.score)
        if passed == remaining:
            break
        remaining = passed
    return outcome
