"""Grad-CAM on a CLIP image tower: where in the image each label text's similarity comes from.

For a label text t and an image, the score is the cosine similarity of the image embedding with t.
Its gradient is taken with respect to the patch tokens entering the tower's last blocks (not leaving
them: a class-token tower reads the image only through the class token after its last block, so the
patch tokens it outputs carry no gradient). Per block, the channel weights are the gradient averaged
over the patches; the map is the rectified weighted sum of the channels at each patch, and the maps of
the blocks are summed. `activation_maps` works on any tower described by a `CamTower`; `open_clip_tower`
describes an open_clip ViT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rar_tools.errors import SegmentationError


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens sit in a block's input: after `prefix` tokens (a class token), a
    `grid` of (rows, columns) patches in row-major order; batch first or sequence first."""

    prefix: int
    grid: tuple[int, int]
    batch_first: bool = True


@dataclass(frozen=True)
class CamTower:
    """An image tower prepared for Grad-CAM: `tower` maps pixels (1, 3, side, side) to an embedding
    (1, dim); the inputs of `blocks` are the activations; `side` is the input side in pixels."""

    tower: torch.nn.Module
    blocks: tuple[torch.nn.Module, ...]
    layout: TokenLayout
    side: int


def open_clip_tower(model: torch.nn.Module, layers: int) -> CamTower:
    """The Grad-CAM view of an open_clip CLIP's ViT image tower, over its last `layers` blocks."""
    visual = getattr(model, "visual", None)
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None or not hasattr(visual, "grid_size"):
        raise SegmentationError(
            "segmentation needs a CLIP with a ViT image tower (open_clip ViT-*); the loaded CLIP has none"
        )
    size = visual.image_size
    side = size[0] if isinstance(size, (tuple, list)) else int(size)
    prefix = 0 if getattr(visual, "class_embedding", None) is None else 1
    layout = TokenLayout(prefix, tuple(visual.grid_size), bool(getattr(transformer, "batch_first", True)))
    return CamTower(visual, tuple(blocks[-max(1, min(layers, len(blocks))) :]), layout, side)


def layer_map(activations: torch.Tensor, gradients: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """One block's Grad-CAM: channels weighted by their patch-averaged gradient, summed, rectified."""
    if not layout.batch_first:
        activations, gradients = activations.transpose(0, 1), gradients.transpose(0, 1)
    rows, cols = layout.grid
    patches = slice(layout.prefix, layout.prefix + rows * cols)
    values, slopes = activations[0, patches].float(), gradients[0, patches].float()
    weights = slopes.mean(dim=0)
    return torch.relu(values @ weights).reshape(rows, cols)


def captured_forward(cam: CamTower, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The tower's embedding of `pixels`, with gradients on, and the inputs of its CAM blocks."""
    captured: list[torch.Tensor] = []
    handles = [block.register_forward_pre_hook(lambda _m, args: captured.append(args[0])) for block in cam.blocks]
    try:
        embedding = cam.tower(pixels.clone().requires_grad_(True))  # a clone: not an inference tensor
    finally:
        for handle in handles:
            handle.remove()
    return embedding, captured


def activation_maps(cam: CamTower, pixels: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """(labels, rows, cols) Grad-CAM maps of one image (`pixels`, (1, 3, side, side)) for unit-norm
    text embeddings `texts` (labels, dim); not normalised (see `masks.normalised`)."""
    with torch.inference_mode(False), torch.enable_grad():
        embedding, captured = captured_forward(cam, pixels)
        unit = embedding[0].float() / embedding[0].float().norm().clamp_min(1e-12)
        scores = unit @ texts.clone().to(unit).T
        maps = []
        for index in range(len(texts)):
            gradients = torch.autograd.grad(scores[index], captured, retain_graph=index < len(texts) - 1)
            maps.append(summed_maps(captured, gradients, cam.layout))
    return torch.stack(maps).detach()


def summed_maps(
    activations: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], layout: TokenLayout
) -> torch.Tensor:
    """The Grad-CAM maps of several blocks, summed."""
    return torch.stack([layer_map(a, g, layout) for a, g in zip(activations, gradients)]).sum(dim=0)
