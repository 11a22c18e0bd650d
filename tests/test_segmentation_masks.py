"""Masks as data: COCO RLE, mapping view maps back to the image, the guided filter, CaR's mask prompts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rar_tools.regions import cut_frame, square_frame, whole_image
from rar_tools.segmentation import rle
from rar_tools.segmentation.masks import frame_part, mask_box, mask_prompt, normalised
from rar_tools.segmentation.refine import box_mean, guided_filter, refine_map


@pytest.mark.parametrize("seed", range(20))
def test_rle_round_trips_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 60, size=2)
    mask = rng.random((height, width)) < rng.random()
    encoded = rle.encode(mask)
    assert encoded["size"] == [height, width]
    np.testing.assert_array_equal(rle.decode(encoded), mask)


@pytest.mark.parametrize(
    "mask", [np.zeros((3, 4), bool), np.ones((3, 4), bool), np.ones((1, 1), bool), np.zeros((1, 1), bool)]
)
def test_rle_round_trips_empty_full_and_one_pixel_masks(mask: np.ndarray) -> None:
    np.testing.assert_array_equal(rle.decode(rle.encode(mask)), mask)


def test_rle_runs_are_column_major_and_start_with_zeros() -> None:
    mask = np.array([[0, 1], [1, 1]], dtype=bool)  # columns: (0, 1), (1, 1)
    assert rle.run_lengths(mask) == [1, 3]
    assert rle.run_lengths(np.array([[1, 0]], dtype=bool)) == [0, 1, 1]


def test_rle_string_is_pycocotools_compressed_form() -> None:
    # 5 and 2 fit one 5-bit group; 40 needs two (8 with the continuation bit, then 1); the fourth count is
    # written as its difference to the second, 1 - 2 = -1, which is the single group 0x1f ('O').
    assert rle.compress([5, 2, 40, 1]) == "52X1O"
    assert rle.decompress("52X1O") == [5, 2, 40, 1]


def test_rle_decode_accepts_plain_counts_and_refuses_a_wrong_size() -> None:
    np.testing.assert_array_equal(rle.decode({"size": [1, 3], "counts": [1, 2]}), [[False, True, True]])
    with pytest.raises(ValueError, match="cover 3 pixels"):
        rle.decode({"size": [2, 2], "counts": [1, 2]})


def test_mask_box_is_exclusive_at_the_far_side_and_none_when_empty() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert mask_box(mask) == [3.0, 2.0, 9.0, 5.0]
    assert mask_box(np.zeros((4, 4), bool)) is None


def test_normalised_maps_peak_at_one_and_drop_negatives() -> None:
    np.testing.assert_allclose(normalised(np.array([[-1.0, 2.0], [1.0, 0.0]])), [[0.0, 1.0], [0.5, 0.0]])
    assert normalised(np.zeros((2, 2))).max() == 0


def test_a_view_map_comes_back_to_the_same_place_in_a_wide_image() -> None:
    image = Image.new("RGB", (80, 40), (0, 0, 0))
    image.paste((255, 255, 255), (50, 10, 70, 30))
    frame = square_frame(whole_image(image.size), image.size, 0.0)
    view = np.asarray(cut_frame(image, frame, 32).convert("L"), dtype=np.float64) / 255
    back = frame_part(view, frame, image.size) > 0.5
    expected = np.zeros((40, 80), bool)
    expected[10:30, 50:70] = True
    assert back.shape == (40, 80)
    assert (back != expected).mean() < 0.05  # only the edges of a 32-pixel view, scaled up, may differ


def test_box_mean_is_the_window_mean_clipped_at_the_borders() -> None:
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    means = box_mean(values, 1)
    assert means[1, 1] == pytest.approx(values[0:3, 0:3].mean())
    assert means[0, 0] == pytest.approx(values[0:2, 0:2].mean())


def test_the_guided_filter_keeps_a_constant_map() -> None:
    guide = np.random.default_rng(0).random((20, 30))
    np.testing.assert_allclose(guided_filter(guide, np.full((20, 30), 0.7), 3), 0.7, atol=1e-9)


def test_the_guided_filter_puts_a_blurred_edge_on_the_image_edge() -> None:
    guide = np.zeros((40, 40))
    guide[:, 20:] = 1.0
    blurred = np.clip((np.arange(40) - 12) / 16, 0, 1)[None].repeat(40, axis=0)  # a ramp over 16 pixels
    steps = np.diff(guided_filter(guide, blurred, 4)[0])
    assert int(np.argmax(steps)) == 19  # the map now jumps where the image does
    assert steps.max() > 4 * np.diff(blurred[0]).max()


def test_refine_map_stays_within_zero_and_one() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    refined = refine_map(image, rng.random((24, 24)))
    assert refined.shape == (24, 24) and refined.min() >= 0 and refined.max() <= 1


def test_mask_prompts_change_only_what_they_should() -> None:
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    pixels = np.asarray(image)
    for kind in ("blur", "grey"):
        prompted = np.asarray(mask_prompt(image, mask, kind, 2.0))
        np.testing.assert_array_equal(prompted[mask], pixels[mask])
        assert (prompted[~mask] != pixels[~mask]).any()
    outlined = np.asarray(mask_prompt(image, mask, "outline", 2.0))
    changed = (outlined != pixels).any(axis=2)
    assert not changed[mask].any() and changed[9, 15] and not changed[0, 0]
    assert tuple(outlined[9, 15]) == (255, 0, 0)
