"""Region geometry on synthetic images with known content: boxes, crops, blur, views, hashes, prompts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rar_tools.errors import RegionError
from rar_tools.regions import (
    PAD_COLOUR,
    VIEW_STEPS,
    Box,
    adaptive_margin,
    blur_outside,
    check_box,
    choose_context_steps,
    context_view,
    dct_matrix,
    draw_ellipse,
    grey_outside,
    hamming,
    interpolate_box,
    perceptual_hash,
    prompted_view,
    rar_crop,
    square_frame,
    view_image,
    view_weights,
)

SIZE = (400, 300)
SQUARE = Box(150.0, 100.0, 210.0, 160.0)  # 60 x 60 pixels
RED = np.array([230, 20, 20])


def checkerboard(size: tuple[int, int] = SIZE, cell: int = 4) -> np.ndarray:
    """A black-and-white checkerboard: as much fine detail as an image can have."""
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    board = ((xs // cell + ys // cell) % 2 * 255).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


@pytest.fixture
def scene() -> Image.Image:
    """A textured background with a red textured square at SQUARE."""
    pixels = checkerboard()
    x1, y1, x2, y2 = (int(v) for v in SQUARE.as_list())
    pixels[y1:y2, x1:x2] = np.where(pixels[y1:y2, x1:x2] > 0, RED, RED // 2)
    return Image.fromarray(pixels)


def detail(pixels: np.ndarray) -> float:
    """Mean absolute difference between horizontal neighbours: high when sharp, low when blurred."""
    return float(np.abs(np.diff(pixels.astype(np.float64), axis=1)).mean())


def inner(box: Box, border: int = 3) -> tuple[slice, slice]:
    """Row and column slices of a box, shrunk by `border` pixels."""
    return slice(round(box.y1) + border, round(box.y2) - border), slice(round(box.x1) + border, round(box.x2) - border)


# -- boxes ---------------------------------------------------------------------------------------
def test_pixel_box_is_kept() -> None:
    assert check_box([10, 20, 110, 220], SIZE) == Box(10, 20, 110, 220)


def test_normalised_box_becomes_pixels() -> None:
    assert check_box([0.25, 0.5, 0.75, 1.0], SIZE, normalized=True) == Box(100, 150, 300, 300)


def test_box_reaching_past_the_edges_is_clipped() -> None:
    assert check_box([-50, -10, 120, 500], SIZE) == Box(0, 0, 120, 300)


@pytest.mark.parametrize(
    "box, normalized, expected",
    [
        ([1, 2, 3], False, "a box is 4 numbers"),
        (["a", 2, 3, 4], False, "a box is 4 numbers"),
        ([0, 0, float("nan"), 10], False, "not a finite number"),
        ([50, 50, 40, 80], False, "has no area"),
        ([50, 50, 80, 50], False, "has no area"),
        ([500, 10, 600, 50], False, "lies outside the 400x300 image"),
        ([10, 10, 12, 100], False, "the minimum is 4 pixels"),
        ([0.1, 0.1, 1.5, 0.5], True, "must lie within 0..1"),
    ],
    ids=["three-numbers", "not-numbers", "nan", "negative-width", "zero-height", "outside", "tiny", "normalised-over"],
)
def test_bad_boxes_are_refused_with_the_reason(box, normalized, expected) -> None:
    with pytest.raises(RegionError, match=expected):
        check_box(box, SIZE, normalized=normalized)


def test_small_boxes_get_relatively_more_context() -> None:
    small, large = Box(0, 0, 20, 20), Box(0, 0, 300, 250)
    assert adaptive_margin(small, SIZE) > adaptive_margin(large, SIZE)
    assert adaptive_margin(small, SIZE) == 1.0
    assert adaptive_margin(Box(0, 0, *SIZE), SIZE) == pytest.approx(0.1)


@pytest.mark.parametrize("box", [Box(0, 0, 30, 30), Box(370, 270, 400, 300), Box(150, 100, 210, 160)])
def test_square_frame_holds_the_box_and_stays_inside_the_image(box: Box) -> None:
    frame = square_frame(box, SIZE, margin=0.5)
    assert frame.side == 2 * box.width
    assert frame.left <= box.x1 and box.x2 <= frame.left + frame.side
    assert frame.top <= box.y1 and box.y2 <= frame.top + frame.side
    assert 0 <= frame.left <= SIZE[0] - frame.side and 0 <= frame.top <= SIZE[1] - frame.side


# -- RAR crop ------------------------------------------------------------------------------------
def test_crop_contains_the_square_where_the_view_says(scene: Image.Image) -> None:
    view, box = context_view(scene, SQUARE, side=224, margin=0.5)
    pixels = np.asarray(view)
    assert view.size == (224, 224)
    assert box.width == pytest.approx(224 / 2) and box.centre == pytest.approx((112, 112))
    rows, cols = inner(box)
    assert (pixels[rows, cols, 0] > pixels[rows, cols, 2] + 50).all()  # red inside the box
    assert (pixels[:20, :20, 0] == pixels[:20, :20, 2]).all()  # grey board outside it


def test_blur_keeps_the_box_sharp_and_blurs_the_rest(scene: Image.Image) -> None:
    sharp, box = context_view(scene, SQUARE, side=224, margin=0.5)
    blurred = np.asarray(rar_crop(scene, SQUARE, side=224, margin=0.5, blur_radius=4.0))
    rows, cols = inner(box)
    assert np.array_equal(blurred[rows, cols], np.asarray(sharp)[rows, cols])
    outside = blurred[:40]  # a band above the box
    assert detail(outside) < 0.2 * detail(np.asarray(sharp)[:40])


def test_view_past_the_image_edge_is_padded_not_stretched() -> None:
    wide = Image.new("RGB", (400, 100), (0, 0, 255))
    view, box = context_view(wide, Box(0, 0, 400, 100), side=200, margin=0.0)
    pixels = np.asarray(view)
    assert box.height == pytest.approx(50)  # 400 x 100 keeps its 4:1 shape inside the 200 x 200 view
    assert tuple(pixels[5, 100]) == PAD_COLOUR and tuple(pixels[100, 100]) == (0, 0, 255)


# -- DynRefer views ------------------------------------------------------------------------------
def test_view_box_runs_from_the_box_to_the_whole_image() -> None:
    assert interpolate_box(SQUARE, SIZE, 0.0) == SQUARE
    assert interpolate_box(SQUARE, SIZE, 1.0) == Box(0, 0, *SIZE)
    assert interpolate_box(SQUARE, SIZE, 0.5) == Box(75, 50, 305, 230)


def test_view_at_t_one_is_the_whole_image(scene: Image.Image) -> None:
    view = np.asarray(view_image(scene, interpolate_box(SQUARE, SIZE, 1.0), side=400), np.int16)
    top = (400 - 300) // 2
    assert np.abs(view[top + 2 : top + 298] - np.asarray(scene, np.int16)[2:298]).mean() < 10


def test_dct_matrix_is_orthonormal() -> None:
    basis = dct_matrix(16)
    assert np.allclose(basis @ basis.T, np.eye(16))


def waves(a: float, b: float) -> Image.Image:
    """A smooth grey picture of large structures (what pHash is meant for)."""
    ys, xs = np.mgrid[0:300, 0:400] / 100.0
    grey = 127 + 60 * np.sin(a * xs + 0.3) * np.cos(b * ys) + 40 * np.cos(0.7 * xs - 1.1 * ys)
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")


def test_perceptual_hash_is_64_balanced_bits_and_stable() -> None:
    bits = perceptual_hash(waves(1.3, 0.9))
    assert bits.shape == (64,) and bits.dtype == bool and bits.sum() == 32  # above the median: half the bits
    assert hamming(bits, perceptual_hash(waves(1.3, 0.9))) == 0


def test_perceptual_hash_distance_grows_with_the_change() -> None:
    picture = waves(1.3, 0.9)
    rng = np.random.default_rng(0)
    noise = rng.integers(-10, 10, (300, 400, 3))
    noisy = Image.fromarray(np.clip(np.asarray(picture, np.int16) + noise, 0, 255).astype(np.uint8))
    near = hamming(perceptual_hash(picture), perceptual_hash(noisy))
    other = hamming(perceptual_hash(picture), perceptual_hash(waves(0.5, 2.0)))
    mirrored = hamming(perceptual_hash(picture), perceptual_hash(picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    assert near <= 6 < 16 <= min(other, mirrored)


def test_context_steps_are_the_views_most_unlike_the_tight_one_weighted_by_one_over_t(scene: Image.Image) -> None:
    tight = perceptual_hash(scene.crop((150, 100, 210, 160)))

    def score(t: float) -> float:
        view = interpolate_box(SQUARE, SIZE, t)
        return hamming(tight, perceptual_hash(scene.crop(tuple(round(v) for v in view.as_list())))) / t

    chosen = choose_context_steps(scene, SQUARE, count=2)
    others = [t for t in VIEW_STEPS if t not in chosen]
    assert len(chosen) == 2 and chosen == sorted(chosen)
    assert min(score(t) for t in chosen) >= max(score(t) for t in others)


def test_equal_scores_prefer_the_nearer_views() -> None:
    plain = Image.new("RGB", SIZE, (90, 90, 90))  # every view hashes alike: all scores are 0
    assert choose_context_steps(plain, SQUARE, count=2) == [0.1, 0.2]
    assert choose_context_steps(plain, SQUARE, count=0) == []


def test_view_weights_favour_the_tight_view_and_sum_to_one() -> None:
    assert view_weights(0, 0.5) == [1.0]
    weights = view_weights(2, 0.5)
    assert weights == [0.5, 0.25, 0.25] and sum(weights) == pytest.approx(1.0)


# -- CaR visual prompts --------------------------------------------------------------------------
def test_ellipse_surrounds_the_box_in_red() -> None:
    grey = Image.new("RGB", (200, 200), (128, 128, 128))
    marked = np.asarray(draw_ellipse(grey, Box(70, 80, 130, 120), width=3))
    red = (marked[:, :, 0] == 255) & (marked[:, :, 1] == 0)
    ys, xs = np.nonzero(red)
    assert red.any() and tuple(marked[100, 100]) == (128, 128, 128)  # the box's centre is untouched
    assert xs.min() < 70 and xs.max() > 130 and ys.min() < 80 and ys.max() > 120  # the ellipse encloses the box


def test_grey_background_keeps_the_box_in_colour(scene: Image.Image) -> None:
    out = np.asarray(grey_outside(scene, SQUARE)).astype(np.int16)
    rows, cols = inner(SQUARE, 0)
    assert np.array_equal(out[rows, cols], np.asarray(scene)[rows, cols])
    assert (out[:90, :, 0] == out[:90, :, 1]).all() and (out[:90, :, 1] == out[:90, :, 2]).all()


def test_blurred_background_changes_only_outside_the_box(scene: Image.Image) -> None:
    out = np.asarray(blur_outside(scene, SQUARE, 3.0))
    rows, cols = inner(SQUARE, 0)
    assert np.array_equal(out[rows, cols], np.asarray(scene)[rows, cols])
    assert not np.array_equal(out[:90], np.asarray(scene)[:90])


@pytest.mark.parametrize("kind", ["ellipse", "blur", "grey"])
def test_prompted_views_are_square_views_of_the_region(scene: Image.Image, kind) -> None:
    view = prompted_view(scene, SQUARE, kind, side=128)
    assert view.size == (128, 128)
    assert not np.array_equal(np.asarray(view), np.asarray(context_view(scene, SQUARE, 128)[0]))


def test_unknown_prompt_is_refused(scene: Image.Image) -> None:
    with pytest.raises(RegionError, match="unknown visual prompt"):
        prompted_view(scene, SQUARE, "glow", side=64)  # type: ignore[arg-type]
