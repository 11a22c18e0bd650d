"""The optional SAM step of `segment` (`--sam-model`) with a tiny random SAM in the real format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.errors import ModelLoadError
from rar_tools.segmentation import rle
from rar_tools.segmentation.sam import MaskSharpener, iou
from rar_tools.settings import Settings


@pytest.fixture(scope="module")
def sharpener(tiny_models_dir: Path) -> MaskSharpener:
    return MaskSharpener(str(tiny_models_dir / "sam"), "cpu")


@pytest.fixture
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 255, (50, 70, 3), dtype=np.uint8))


def test_iou_of_masks() -> None:
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[:2], b[1:3] = True, True
    assert iou(a, b) == pytest.approx(4 / 12) and iou(a, a) == 1.0 and iou(a & False, b & False) == 0.0


def test_sam_gives_three_masks_of_the_image_size_for_a_box(sharpener: MaskSharpener, image: Image.Image) -> None:
    found = sharpener.candidates(image, [10, 10, 40, 30])
    assert found.shape == (3, 50, 70) and found.dtype == bool


def test_the_sam_mask_agreeing_best_with_the_clip_mask_replaces_it(sharpener: MaskSharpener, image) -> None:
    mask = np.zeros((50, 70), bool)
    mask[10:30, 10:40] = True
    sharpened = sharpener.sharpen(image, mask)
    found = sharpener.candidates(image, [10.0, 10.0, 40.0, 30.0])
    scores = [iou(candidate, mask) for candidate in found]
    expected = found[int(np.argmax(scores))] if max(scores) > 0 else mask
    np.testing.assert_array_equal(sharpened, expected)


def test_an_empty_mask_stays_empty(sharpener: MaskSharpener, image: Image.Image) -> None:
    assert not sharpener.sharpen(image, np.zeros((50, 70), bool)).any()


def test_segment_with_a_sam_model_names_it_and_keeps_the_mask_format(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, image: Image.Image
) -> None:
    image.save(tmp_path / "scene.png")
    sam = str(tiny_models_dir / "sam")
    tools = RarTools(Settings(data_dir=tmp_path / "data", clip_model=clip_model, no_ranker=True, sam_model=sam))
    result = tools.segment(str(tmp_path / "scene.png"), ["a", "b"], boxes=[[5, 5, 60, 45]])
    assert result.refinement == f"guided filter + SAM {sam}"
    for mask in result.regions[0].masks:
        pixels = rle.decode(mask.rle.model_dump())
        assert pixels.shape == (50, 70) and mask.area == int(pixels.sum())
        assert pixels.sum() == pixels[5:45, 5:60].sum()  # still inside its region


def test_a_missing_sam_folder_is_a_clear_load_error(tmp_path: Path, clip_model: str, image: Image.Image) -> None:
    image.save(tmp_path / "scene.png")
    tools = RarTools(
        Settings(data_dir=tmp_path / "data", clip_model=clip_model, no_ranker=True, sam_model=str(tmp_path / "none"))
    )
    with pytest.raises(ModelLoadError, match="the SAM model folder .* does not exist"):
        tools.segment(str(tmp_path / "scene.png"), ["a"])
