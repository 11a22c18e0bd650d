"""Region geometry, pinned values: boundary boxes, frames past the image edges, exact masks, the
ellipse's extent, the options reaching each view, and a scene where the pHash score decides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from rar_tools.errors import RegionError
from rar_tools.regions import (
    PAD_COLOUR,
    Box,
    Frame,
    adaptive_margin,
    blur_outside,
    box_mask,
    check_box,
    choose_context_steps,
    context_view,
    cut_frame,
    dct_matrix,
    draw_ellipse,
    grey_outside,
    hamming,
    hash_basis,
    perceptual_hash,
    pixel_bounds,
    prompted_view,
    rar_crop,
    square_frame,
    view_image,
    view_weights,
    whole_image,
)

SIZE = (400, 300)
SQUARE = Box(150.0, 100.0, 210.0, 160.0)


def stripes(size: tuple[int, int] = SIZE) -> Image.Image:
    """Vertical stripes of several widths: detail a blur visibly changes."""
    xs = np.arange(size[0])
    row = np.where((xs // 3) % 2 == 0, 230, 20) ^ np.where((xs // 11) % 2 == 0, 0, 120)
    return Image.fromarray(np.repeat(np.repeat(row[None, :, None], size[1], axis=0), 3, axis=2).astype(np.uint8))


def numbered(size: tuple[int, int]) -> Image.Image:
    """Every pixel a different colour: where each one lands in a view can be checked."""
    values = np.arange(size[0] * size[1]).reshape(size[1], size[0])
    return Image.fromarray(np.stack([values % 251, values // 251, np.full_like(values, 7)], axis=2).astype(np.uint8))


# -- boxes -------------------------------------------------------------------------------------------
def test_box_measures() -> None:
    box = Box(1.0, 2.0, 5.0, 10.0)
    assert (box.width, box.height, box.centre, box.as_list()) == (4.0, 8.0, (3.0, 6.0), [1.0, 2.0, 5.0, 10.0])
    assert box.shifted(1.0, 2.0, scale=2.0) == Box(4.0, 8.0, 12.0, 24.0)
    assert box.shifted(-1.0, -2.0) == Box(0.0, 0.0, 4.0, 8.0)
    assert whole_image(SIZE) == Box(0.0, 0.0, 400.0, 300.0)


def test_a_normalised_box_may_start_at_zero_and_end_at_one() -> None:
    assert check_box([0.0, 0.0, 1.0, 0.5], SIZE, normalized=True) == Box(0.0, 0.0, 400.0, 150.0)


@pytest.mark.parametrize("box", [[-0.01, 0.0, 0.5, 0.5], [0.0, -0.01, 0.5, 0.5], [0.0, 0.0, 0.5, 1.01]])
def test_a_normalised_box_past_zero_or_one_is_refused(box: list[float]) -> None:
    with pytest.raises(RegionError, match=r"^normalised box .* must lie within 0\.\.1; give pixels"):
        check_box(box, SIZE, normalized=True)


def test_a_box_of_exactly_the_minimum_side_is_kept() -> None:
    assert check_box([10, 10, 14, 14], SIZE) == Box(10.0, 10.0, 14.0, 14.0)
    assert check_box([0, 0, 10, 10], SIZE, min_side=10) == Box(0.0, 0.0, 10.0, 10.0)


@pytest.mark.parametrize(
    ("box", "measured"),
    [
        ([10, 10, 13.9, 14], "3.9x4"),
        ([10, 10, 14, 13.5], "4x3.5"),
        ([399, 0, 420, 50], "1x50"),
        ([0, 299, 50, 350], "50x1"),
    ],
)
def test_a_box_under_the_minimum_side_is_refused_with_its_size(box: list[float], measured: str) -> None:
    with pytest.raises(RegionError, match=f"is {measured} pixels inside the 400x300 image; the minimum is 4 pixels"):
        check_box(box, SIZE)


@pytest.mark.parametrize("box", ["0,0,10,10", "1234", {"x1": 0}, (1, 2, 3, 4, 5)])
def test_a_box_that_is_not_four_numbers_is_refused(box: object) -> None:
    with pytest.raises(RegionError, match=r"^a box is 4 numbers \(x1, y1, x2, y2\), got "):
        check_box(box, SIZE)  # type: ignore[arg-type]


@pytest.mark.parametrize("box", [[50, 50, 50, 80], [50, 50, 80, 50]])
def test_a_box_without_width_or_height_has_no_area(box: list[float]) -> None:
    with pytest.raises(RegionError, match="has no area"):
        check_box(box, SIZE)


@pytest.mark.parametrize("box", [[400, 10, 450, 50], [10, 300, 50, 350]])
def test_a_box_touching_the_image_from_outside_lies_outside(box: list[float]) -> None:
    with pytest.raises(RegionError, match="lies outside the 400x300 image"):
        check_box(box, SIZE)


def test_an_infinite_coordinate_is_refused() -> None:
    with pytest.raises(RegionError, match="has a value that is not a finite number"):
        check_box([0, 0, float("inf"), 10], SIZE)


@pytest.mark.parametrize(
    ("box", "margin"), [(Box(0, 0, 20, 12), 1.0), (Box(0, 0, 80, 60), 0.5), (Box(0, 0, 200, 150), 0.2)]
)
def test_adaptive_margin_is_a_tenth_over_the_root_of_the_area_share(box: Box, margin: float) -> None:
    assert adaptive_margin(box, SIZE) == pytest.approx(margin)  # shares 0.2 %, 4 %, 25 %


# -- frames and views --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("box", "margin", "frame"),
    [
        (SQUARE, 0.5, Frame(120, 70, 120)),
        (Box(0, 0, 30, 30), 0.5, Frame(0, 0, 60)),
        (Box(370, 270, 400, 300), 0.5, Frame(340, 240, 60)),
        (Box(0, 0, 400, 300), 0.1, Frame(-40, -90, 480)),  # larger than the image: centred on it
        (Box(5, 5, 5.5, 5.5), 0.0, Frame(5, 5, 1)),
        (Box(0, 100, 200, 300), 0.25, Frame(0, 0, 300)),  # exactly the image's height: no room to move
    ],
)
def test_square_frame_values(box: Box, margin: float, frame: Frame) -> None:
    assert square_frame(box, SIZE, margin) == frame


def test_a_frame_maps_a_box_into_view_coordinates() -> None:
    assert Frame(120, 70, 120).to_view(SQUARE, 240) == Box(60.0, 60.0, 180.0, 180.0)


def test_a_frame_larger_than_the_image_keeps_every_pixel_and_pads_the_rest() -> None:
    image = numbered((4, 3))
    view = np.asarray(cut_frame(image, Frame(-2, -1, 6), 6))
    expected = np.tile(np.array(PAD_COLOUR, np.uint8), (6, 6, 1))
    expected[1:4, 2:6] = np.asarray(image)
    assert np.array_equal(view, expected)


def test_a_frame_past_the_right_and_bottom_edges_is_padded_there() -> None:
    image = numbered((4, 3))
    view = np.asarray(cut_frame(image, Frame(2, 1, 4), 4))
    expected = np.tile(np.array(PAD_COLOUR, np.uint8), (4, 4, 1))
    expected[0:2, 0:2] = np.asarray(image)[1:3, 2:4]
    assert np.array_equal(view, expected)


def test_the_box_mask_covers_x1_to_x2_exclusive() -> None:
    mask = np.asarray(box_mask((10, 8), Box(2, 3, 6, 7)))
    expected = np.zeros((8, 10), np.uint8)
    expected[3:7, 2:6] = 255
    assert np.array_equal(mask, expected)


def test_the_adaptive_context_view_of_a_box() -> None:
    # share 3600 / 120000: margin 0.1 / sqrt(0.03) = 0.577, side ceil(60 * 2.155) = 130, frame at (115, 65)
    _, inner = context_view(numbered(SIZE), SQUARE, side=260)
    assert inner == Box(70.0, 70.0, 190.0, 190.0)


def test_a_view_box_itself_fills_its_view_without_context() -> None:
    image = numbered(SIZE)
    view = np.asarray(view_image(image, Box(0, 0, 400, 300), side=400))
    assert np.array_equal(view[50:350], np.asarray(image))
    assert (view[:50] == PAD_COLOUR).all() and (view[350:] == PAD_COLOUR).all()


def test_pixel_bounds_cover_the_box() -> None:
    assert pixel_bounds(Box(1.2, 2.7, 5.1, 6.0)) == (1, 2, 6, 6)


# -- what each view applies --------------------------------------------------------------------------
def test_blur_outside_is_the_gaussian_blur_of_the_given_radius_there() -> None:
    image, box = stripes(), Box(100, 100, 200, 200)
    out = np.asarray(blur_outside(image, box, radius=3.0))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(3.0)))
    outside = np.asarray(box_mask(SIZE, box)) == 0
    assert np.array_equal(out[outside], blurred[outside])
    assert np.array_equal(out[~outside], np.asarray(image)[~outside])


def test_grey_outside_is_the_luma_of_the_colour() -> None:
    image = Image.new("RGB", (20, 20), (200, 100, 50))
    out = np.asarray(grey_outside(image, Box(5, 5, 10, 10)))
    assert tuple(out[0, 0]) == (124, 124, 124)  # 0.299 * 200 + 0.587 * 100 + 0.114 * 50 = 124.2
    assert tuple(out[7, 7]) == (200, 100, 50)


def test_rar_crop_blurs_with_the_given_radius_outside_the_box() -> None:
    view, inner = context_view(stripes(), SQUARE, side=120, margin=0.5)
    crop = np.asarray(rar_crop(stripes(), SQUARE, side=120, margin=0.5, blur_radius=2.5))
    assert np.array_equal(crop, np.asarray(blur_outside(view, inner, 2.5)))
    assert not np.array_equal(crop, np.asarray(blur_outside(view, inner, 4.0)))


def test_with_no_context_margin_the_crop_is_the_box_alone() -> None:
    view, inner = context_view(stripes(), SQUARE, side=120, margin=0.0)
    assert inner == Box(0.0, 0.0, 120.0, 120.0)
    assert np.array_equal(np.asarray(rar_crop(stripes(), SQUARE, side=120, margin=0.0)), np.asarray(view))


@pytest.mark.parametrize("kind", ["grey", "blur"])
def test_the_context_margin_reaches_the_prompted_view(kind: str) -> None:
    tight = prompted_view(stripes(), SQUARE, kind, side=120, margin=0.0)  # type: ignore[arg-type]
    assert np.array_equal(np.asarray(tight), np.asarray(context_view(stripes(), SQUARE, 120, 0.0)[0]))
    wide = np.asarray(prompted_view(stripes(), SQUARE, kind, side=120, margin=1.0))  # type: ignore[arg-type]
    view, inner = context_view(stripes(), SQUARE, 120, 1.0)
    expected = grey_outside(view, inner) if kind == "grey" else blur_outside(view, inner, 4.0)
    assert np.array_equal(wide, np.asarray(expected))


def test_the_blur_radius_reaches_the_prompted_view() -> None:
    view, inner = context_view(stripes(), SQUARE, 120, 0.5)
    prompted = prompted_view(stripes(), SQUARE, "blur", side=120, margin=0.5, blur_radius=1.5)
    assert np.array_equal(np.asarray(prompted), np.asarray(blur_outside(view, inner, 1.5)))


def red_pixels(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    return (pixels[:, :, 0] == 255) & (pixels[:, :, 1] == 0) & (pixels[:, :, 2] == 0)


def test_the_ellipse_passes_through_the_box_corners() -> None:
    # centre (100, 100), semi-axes 60 / sqrt 2 and 40 / sqrt 2: x from 57.6 to 142.4, y from 71.7 to 128.3
    red = red_pixels(draw_ellipse(Image.new("RGB", (200, 200), (128, 128, 128)), Box(70, 80, 130, 120), width=3))
    ys, xs = np.nonzero(red)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (57, 142, 71, 128)
    assert list(np.nonzero(red[100])[0]) == [57, 58, 59, 140, 141, 142]  # 3 pixels wide
    assert red[79:82, 69:72].any() and red[118:121, 128:131].any()  # at the box's corners


@pytest.mark.parametrize(("width", "line"), [(200, 2), (376, 3), (600, 4)])  # max side / 150, at least 2
def test_the_ellipse_line_grows_with_the_image(width: int, line: int) -> None:
    red = red_pixels(draw_ellipse(Image.new("RGB", (width, 200), (128, 128, 128)), Box(70, 80, 130, 120)))
    assert list(np.nonzero(red[100])[0]) == list(range(57, 57 + line)) + list(range(143 - line, 143))


def test_an_unknown_prompt_is_refused_with_the_known_ones() -> None:
    with pytest.raises(RegionError, match="^unknown visual prompt 'glow'; use one of ellipse, blur, grey$"):
        prompted_view(stripes(), SQUARE, "glow")  # type: ignore[arg-type]


def test_views_default_to_a_224_square_blurred_with_sigma_4() -> None:
    view, inner = context_view(stripes(), SQUARE, 224)
    expected = np.asarray(blur_outside(view, inner, 4.0))
    assert np.array_equal(np.asarray(rar_crop(stripes(), SQUARE)), expected)
    assert np.array_equal(np.asarray(prompted_view(stripes(), SQUARE, "blur")), expected)


def test_view_weights_share_the_rest_equally() -> None:
    assert view_weights(3, 0.4) == pytest.approx([0.4, 0.2, 0.2, 0.2])
    assert view_weights(1, 0.7) == pytest.approx([0.7, 0.3])


# -- pHash -------------------------------------------------------------------------------------------
def cosine_basis(n: int, rows: int) -> np.ndarray:
    """The first `rows` orthonormal DCT-II basis vectors of length n, written out."""
    return np.array(
        [
            [math.sqrt((1 if k == 0 else 2) / n) * math.cos(math.pi * (2 * i + 1) * k / (2 * n)) for i in range(n)]
            for k in range(rows)
        ]
    )


def test_dct_matrix_values() -> None:
    assert dct_matrix(2) == pytest.approx(np.array([[1, 1], [1, -1]]) / math.sqrt(2))
    assert dct_matrix(5) == pytest.approx(cosine_basis(5, 5))
    assert hash_basis() == pytest.approx(cosine_basis(224, 8))


def test_perceptual_hash_bits_are_the_low_frequencies_above_their_median() -> None:
    coefficients = np.random.default_rng(4).permutation(np.arange(-315, 315, 10)).astype(np.float64)
    low = np.concatenate([[128 * 224], coefficients]).reshape(8, 8)  # mean grey 128
    basis = cosine_basis(224, 8)
    grey = basis.T @ low @ basis  # the picture whose 8 x 8 lowest frequencies are `low`
    assert 0 <= grey.min() and grey.max() <= 255
    bits = perceptual_hash(Image.fromarray(np.round(grey).astype(np.uint8)).convert("RGB"))
    assert np.array_equal(bits, (low > np.median(low)).ravel())


def test_hamming_counts_differing_bits() -> None:
    assert hamming(np.array([True, False, True, True]), np.array([True, True, False, True])) == 2


# -- DynRefer's choice of context views --------------------------------------------------------------
@pytest.fixture
def far_stripe() -> Image.Image:
    """Plain grey, and a striped band at x >= 370: only views reaching past x = 370 differ from the box."""
    pixels = np.full((300, 400, 3), 100, np.uint8)
    pixels[:, 370:] = (250, 10, 10)
    pixels[::7, 370:] = 0
    return Image.fromarray(pixels)


def test_only_views_that_differ_from_the_box_are_chosen(far_stripe: Image.Image) -> None:
    # b_t reaches x = 210 + 190 t: past 370 only for t = 0.9 (381) and t = 1.0 (400)
    assert choose_context_steps(far_stripe, SQUARE, count=2) == [0.9, 1.0]


def test_one_context_view_is_the_highest_score(far_stripe: Image.Image) -> None:
    tight = perceptual_hash(far_stripe.crop((150, 100, 210, 160)))
    scores = {
        t: hamming(tight, perceptual_hash(far_stripe.crop(bounds))) / t
        for t, bounds in [(0.9, (15, 10, 381, 286)), (1.0, (0, 0, 400, 300))]
    }
    assert choose_context_steps(far_stripe, SQUARE, count=1) == [max(scores, key=scores.get)]


def test_ties_among_the_rest_go_to_the_nearest_view(far_stripe: Image.Image) -> None:
    assert choose_context_steps(far_stripe, SQUARE, count=3) == [0.1, 0.9, 1.0]
