"""Region queries: views and weights, batched encoding, CaR's filter, what the ranker sees."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rar_tools.encoder import ClipEncoder, create_encoder
from rar_tools.errors import RegionError
from rar_tools.region_recognition import (
    RegionOptions,
    ViewConfig,
    car_filter,
    encode_queries,
    ranker_images,
    region_query,
    whole_image_query,
)
from rar_tools.regions import Box, context_view, prompted_view, rar_crop, view_image

BOX = Box(60.0, 40.0, 120.0, 100.0)


@pytest.fixture(scope="module")
def encoder(clip_model: str) -> ClipEncoder:
    return create_encoder(clip_model, batch_size=4)


@pytest.fixture
def picture() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8))


def unit_rows(*rows: list[float]) -> np.ndarray:
    array = np.asarray(rows, np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


# -- CaR filter ----------------------------------------------------------------------------------
def test_filter_keeps_the_labels_the_prompts_agree_with() -> None:
    prompts = unit_rows([1, 0, 0], [1, 0.1, 0])
    labels = unit_rows([1, 0.05, 0], [0.98, 0.1, 0.05], [0, 1, 0], [0, 0, 1])
    keep, rounds = car_filter(prompts, labels, threshold=0.1)
    assert keep == [0, 1] and rounds == 2  # one round drops two labels, the next changes nothing


def test_filter_keeps_the_best_label_when_none_passes() -> None:
    prompts = unit_rows([1, 0, 0])
    labels = unit_rows([1, 0.2, 0], [1, 0.21, 0], [1, 0.22, 0])  # near-ties: each gets about a third
    keep, _ = car_filter(prompts, labels, threshold=0.9)
    assert keep == [0]


def test_filter_changes_nothing_when_every_label_passes() -> None:
    prompts = unit_rows([1, 1, 0])
    labels = unit_rows([1, 0, 0], [0, 1, 0])
    assert car_filter(prompts, labels, threshold=0.3) == ([0, 1], 1)


# -- views ---------------------------------------------------------------------------------------
def test_region_query_has_the_tight_view_first_and_weights_summing_to_one(picture: Image.Image) -> None:
    query = region_query(picture, BOX, views=3, car_filter=False, config=ViewConfig(side=64))
    assert len(query.views) == 3 and query.steps[0] == 0.0 and query.prompts == ()
    assert all(view.size == (64, 64) for view in query.views)
    assert query.weights == (0.5, 0.25, 0.25)


def test_car_filter_adds_the_prompted_views_the_tight_view_is_not(picture: Image.Image) -> None:
    config = ViewConfig(side=64)
    query = region_query(picture, BOX, views=1, car_filter=True, config=config)
    assert len(query.views) == 1 and query.weights == (1.0,)
    expected = [
        prompted_view(picture, BOX, kind, 64, config.margin, config.blur_radius) for kind in ("ellipse", "grey")
    ]
    assert [np.asarray(p).tolist() for p in query.prompts] == [np.asarray(e).tolist() for e in expected]
    blurred = prompted_view(picture, BOX, "blur", 64, config.margin, config.blur_radius)
    assert np.array_equal(np.asarray(query.views[0]), np.asarray(blurred))  # CaR's blur prompt is the tight view


def test_prompted_embeddings_are_the_tight_view_then_the_prompts(encoder: ClipEncoder, picture: Image.Image) -> None:
    query = encode_queries(encoder, [region_query(picture, BOX, 1, True, ViewConfig(side=64))])[0]
    assert np.array_equal(query.prompted_embeddings, np.vstack([query.embeddings[:1], query.prompt_embeddings]))
    assert query.prompted_embeddings.shape == (3, encoder.dim)


def test_whole_image_query_is_the_image_itself(picture: Image.Image) -> None:
    query = whole_image_query(picture)
    assert query.box is None and query.views == (picture,) and query.weights == (1.0,)


def test_batched_encoding_equals_encoding_each_query_alone(encoder: ClipEncoder, picture: Image.Image) -> None:
    config = ViewConfig(side=64)
    queries = [
        region_query(picture, BOX, views=3, car_filter=True, config=config),
        region_query(picture, Box(0, 0, 50, 50), views=1, car_filter=False, config=config),
        whole_image_query(picture),
    ]
    together = encode_queries(encoder, queries)
    for query, encoded in zip(queries, together):
        alone = encode_queries(encoder, [query])[0]
        assert encoded.embeddings.shape == (len(query.views), encoder.dim)
        assert encoded.prompt_embeddings.shape == (len(query.prompts), encoder.dim)
        assert np.allclose(encoded.embeddings, alone.embeddings, atol=1e-5)
        assert np.allclose(encoded.prompt_embeddings, alone.prompt_embeddings, atol=1e-5)


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"views": 0}, "views must be an integer from 1"),
        ({"views": 6}, "views must be an integer from 1"),
        ({"ranker_view": "zoom"}, "ranker_view must be"),
    ],
)
def test_region_options_are_checked(options: dict, expected: str) -> None:
    with pytest.raises(RegionError, match=expected):
        RegionOptions(**options)


# -- what the ranker sees ------------------------------------------------------------------------
def red_pixels(image: Image.Image) -> int:
    pixels = np.asarray(image)
    return int(((pixels[:, :, 0] == 255) & (pixels[:, :, 1] == 0) & (pixels[:, :, 2] == 0)).sum())


def test_ranker_sees_the_crop_or_the_marked_region(picture: Image.Image) -> None:
    config = ViewConfig(side=64)
    crop, context = ranker_images(picture, BOX, "crop", False, config, side=128)
    prompt, _ = ranker_images(picture, BOX, "prompt", False, config, side=128)
    assert crop.size == prompt.size == (128, 128) and context is None
    assert red_pixels(prompt) > red_pixels(crop)


def test_context_image_is_the_whole_picture_with_the_region_marked(picture: Image.Image) -> None:
    _, context = ranker_images(picture, BOX, "crop", True, ViewConfig(side=64), side=100)
    assert context.size == (100, 75) and red_pixels(context) > 0


def test_two_views_are_the_tight_view_and_the_most_different_context_view() -> None:
    scene = np.full((300, 400, 3), 100, np.uint8)
    scene[:, 370:] = (250, 10, 10)  # only the views reaching x >= 370 differ from the box;
    scene[::7, 370:] = 0  # with these lines, the whole image (t = 1) differs most (tests/test_region_values.py)
    image, box = Image.fromarray(scene), Box(150.0, 100.0, 210.0, 160.0)
    config = ViewConfig(side=64)
    query = region_query(image, box, views=2, car_filter=False, config=config)
    assert (query.steps, query.weights) == ((0.0, 1.0), (0.5, 0.5))
    assert np.array_equal(np.asarray(query.views[1]), np.asarray(view_image(image, Box(0, 0, 400, 300), 64)))


def test_the_region_context_setting_reaches_the_crop_the_prompts_and_the_ranker(picture: Image.Image) -> None:
    config = ViewConfig(side=64, margin=0.0, blur_radius=2.0)  # no context: every view is the box alone
    query = region_query(picture, BOX, views=1, car_filter=True, config=config)
    box_alone = np.asarray(context_view(picture, BOX, 64, 0.0)[0])
    assert np.array_equal(np.asarray(query.views[0]), box_alone)
    grey = np.asarray(query.prompts[1])
    assert np.array_equal(grey, box_alone)  # nothing outside the box to grey
    shown, _ = ranker_images(picture, BOX, "crop", False, config, side=128)
    assert np.array_equal(np.asarray(shown), np.asarray(context_view(picture, BOX, 128, 0.0)[0]))


def test_the_ranker_crop_blurs_in_proportion_to_its_size(picture: Image.Image) -> None:
    config = ViewConfig(side=64, blur_radius=3.0)
    shown, _ = ranker_images(picture, BOX, "crop", False, config, side=128)
    assert np.array_equal(np.asarray(shown), np.asarray(rar_crop(picture, BOX, 128, None, 6.0)))
