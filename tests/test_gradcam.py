"""Grad-CAM through the real gradient path: on a hand-built tower whose map is known in closed form,
and on the tiny open_clip ViT (shapes and the blocks it hooks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rar_tools.errors import SegmentationError
from rar_tools.segmentation.gradcam import CamTower, TokenLayout, activation_maps, open_clip_tower
from rar_tools.testing.tiny_models import TINY_CLIP_CONFIG

PATCH = 4  # pixels per patch side of the hand-built tower; its grid is 2 x 2


class MeanPoolBlock(nn.Module):
    """A 'transformer block' whose class token becomes the mean of the patch tokens."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokens[:, 1:].mean(dim=1, keepdim=True), tokens[:, 1:]], dim=1)


class HandBuiltTower(nn.Module):
    """Patch tokens = each patch's mean colour (3 channels), a zero class token, one mean-pooling block,
    then the class token as the embedding: everything about its Grad-CAM can be derived by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.patchify = nn.Conv2d(3, 3, PATCH, stride=PATCH, bias=False)
        with torch.no_grad():
            self.patchify.weight.zero_()
            for channel in range(3):
                self.patchify.weight[channel, channel] = 1.0 / PATCH**2
        self.block = MeanPoolBlock()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patchify(pixels).flatten(2).transpose(1, 2)  # (1, 4, 3), row-major
        tokens = torch.cat([torch.zeros_like(patches[:, :1]), patches], dim=1)
        return self.block(tokens)[:, 0]


def hand_built() -> CamTower:
    tower = HandBuiltTower()
    return CamTower(tower, (tower.block,), TokenLayout(prefix=1, grid=(2, 2)), side=2 * PATCH)


def patch_image(colours: list[tuple[float, float, float]]) -> torch.Tensor:
    """A (1, 3, 8, 8) image of 2 x 2 uniform patches, in row-major order."""
    pixels = torch.zeros(1, 3, 2 * PATCH, 2 * PATCH)
    for index, colour in enumerate(colours):
        row, col = divmod(index, 2)
        rows, cols = slice(row * PATCH, (row + 1) * PATCH), slice(col * PATCH, (col + 1) * PATCH)
        pixels[0, :, rows, cols] = torch.tensor(colour)[:, None, None]
    return pixels


def expected_map(colours: list[tuple[float, float, float]], text: np.ndarray) -> np.ndarray:
    """Grad-CAM of the hand-built tower, derived by hand.

    The embedding e is the mean of the patch colours a_p; the score is cos(e, t), whose gradient in e
    is (t - cos(e, t) e / |e|) / |e|, and in each a_p that divided by the 4 patches. The channel
    weights (the gradient averaged over patches) are that same vector w, so the map is relu(a_p . w)."""
    patches = np.asarray(colours, dtype=np.float64)
    e = patches.mean(axis=0)
    norm = np.linalg.norm(e)
    w = (text - (e @ text / norm) * e / norm) / norm / len(patches)
    return np.maximum(patches @ w, 0.0).reshape(2, 2)


@pytest.mark.parametrize("colour", ["red", "blue"])
def test_grad_cam_of_the_hand_built_tower_is_the_map_derived_by_hand(colour: str) -> None:
    colours = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (0.2, 0.0, 0.8)]
    text = np.array([1.0, 0.0, 0.0]) if colour == "red" else np.array([0.0, 0.0, 1.0])
    maps = activation_maps(hand_built(), patch_image(colours), torch.tensor(text[None], dtype=torch.float32))
    np.testing.assert_allclose(maps[0].numpy(), expected_map(colours, text), rtol=1e-5, atol=1e-7)


def test_the_red_text_lights_the_red_patch_and_only_it() -> None:
    colours = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0)]
    maps = activation_maps(hand_built(), patch_image(colours), torch.tensor([[1.0, 0.0, 0.0]]))
    assert maps[0, 0, 0] > 0
    assert maps[0].flatten()[1:].abs().max() == 0


def test_one_map_per_text_in_order() -> None:
    colours = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)]
    texts = torch.eye(3)
    maps = activation_maps(hand_built(), patch_image(colours), texts)
    assert maps.shape == (3, 2, 2)
    for index in range(3):
        np.testing.assert_allclose(maps[index].numpy(), expected_map(colours, texts[index].numpy()), atol=1e-7)


def test_grad_cam_works_inside_inference_mode() -> None:
    colours = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0)]
    tower = hand_built()
    with torch.inference_mode():
        pixels, text = patch_image(colours), torch.tensor([[1.0, 0.0, 0.0]])  # inference tensors
        maps = activation_maps(tower, pixels, text)
    assert maps[0, 0, 0] > 0


def tiny_clip() -> nn.Module:
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(**TINY_CLIP_CONFIG["model_cfg"]).eval()


@pytest.mark.parametrize("layers", [1, 2])
def test_the_open_clip_tower_hooks_the_inputs_of_its_last_blocks(layers: int) -> None:
    model = tiny_clip()
    cam = open_clip_tower(model, layers)
    assert cam.blocks == tuple(model.visual.transformer.resblocks[-layers:])
    assert (cam.layout.prefix, cam.layout.grid, cam.side) == (1, (4, 4), 32)


def test_open_clip_maps_have_the_patch_grid_and_are_not_negative() -> None:
    model = tiny_clip()
    texts = torch.nn.functional.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    maps = activation_maps(open_clip_tower(model, 1), torch.randn(1, 3, 32, 32), texts)
    assert maps.shape == (5, 4, 4) and bool((maps >= 0).all())
    assert float(maps.sum()) > 0  # the last block's attention carries gradient to the patch tokens


def test_a_clip_without_a_vit_tower_is_refused_clearly() -> None:
    with pytest.raises(SegmentationError, match="ViT image tower"):
        open_clip_tower(nn.Linear(3, 3), 1)
