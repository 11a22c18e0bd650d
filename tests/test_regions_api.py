"""Regions through the Python API: boxes on every call, views, CaR filter, hierarchy, batching, detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.errors import DetectorError, ModelLoadError, RankerError, RegionError
from rar_tools.settings import Settings

BOX = [40, 30, 100, 90]
OTHER_BOX = [100, 10, 150, 60]
BIRDS = ["Herring Gull", "Western Gull", "Common Tern", "Blue Jay", "Florida Jay"]
HIERARCHY = [("gull", "Laridae"), ("gull", "Laridae"), ("tern", "Laridae"), ("jay", "Corvidae"), ("jay", "Corvidae")]


@pytest.fixture
def scene(tmp_path: Path) -> str:
    """A 160 x 120 noisy picture with a red square at BOX and a blue one at OTHER_BOX."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    pixels[30:90, 40:100] = (220, 30, 30)
    pixels[10:60, 100:150] = (30, 60, 220)
    path = tmp_path / "scene.png"
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def birds(tools: RarTools) -> RarTools:
    """`tools` with a memory 'birds' of five label texts with category and parent."""
    tools.add_labels("birds", BIRDS, hierarchy=HIERARCHY)
    return tools


def ranking_tools(tmp_path: Path, clip_model: str, tiny_models_dir: Path, ranker: str = "mllm", **extra) -> RarTools:
    settings = Settings(
        data_dir=tmp_path / "data",
        clip_model=clip_model,
        ranker_model=str(tiny_models_dir / ranker),
        detector_model=str(tiny_models_dir / "detector"),
        **extra,
    )
    tools = RarTools(settings)
    tools.add_labels("birds", BIRDS, hierarchy=HIERARCHY)
    return tools


@pytest.fixture
def qwen_tools(tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> RarTools:
    return ranking_tools(tmp_path, clip_model, tiny_models_dir)


# -- retrieval -------------------------------------------------------------------------------------
def test_region_searches_label_texts_by_default(birds: RarTools, scene: str) -> None:
    birds.add_images("birds", [scene], "Herring Gull")
    whole = birds.retrieve("birds", scene, k=3)
    region = birds.retrieve("birds", scene, k=3, box=BOX)
    assert whole.kinds_searched == ["image", "text"] and whole.region is None
    assert region.kinds_searched == ["text"] and region.region.box == [40, 30, 100, 90]


def test_region_image_retrieval_stays_available(birds: RarTools, scene: str) -> None:
    birds.add_images("birds", [scene], "Herring Gull", box=BOX)
    result = birds.retrieve("birds", scene, k=3, mode="image", box=BOX)
    assert result.kinds_searched == ["image"]
    assert result.candidates[0].label == "Herring Gull"
    assert result.candidates[0].image_similarity == pytest.approx(1.0, abs=1e-4)  # the stored crop itself


def test_normalised_box_finds_what_the_pixel_box_finds(birds: RarTools, scene: str) -> None:
    pixels = birds.retrieve("birds", scene, k=5, box=BOX)
    normalised = birds.retrieve("birds", scene, k=5, box=[0.25, 0.25, 0.625, 0.75], box_normalized=True)
    # one search may be Chroma's and the other the in-process mirror's: float32 sums differ in the last bits
    assert [c.label for c in normalised.candidates] == [c.label for c in pixels.candidates]
    assert [c.score for c in normalised.candidates] == pytest.approx([c.score for c in pixels.candidates], abs=1e-5)


def test_three_views_are_reported_with_their_weights(birds: RarTools, scene: str) -> None:
    region = birds.retrieve("birds", scene, k=5, box=BOX, views=3).region
    assert region.view_steps[0] == 0.0 and len(region.view_steps) == 3
    assert region.view_weights == [0.5, 0.25, 0.25]


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ({"views": 3}, "give a box"),
        ({"car_filter": True}, "give a box"),
        ({"box": [500, 500, 600, 600]}, "lies outside the 160x120 image"),
        ({"box": [10, 10, 12, 50]}, "the minimum is 4 pixels"),
        ({"box": BOX, "views": 9}, "views must be an integer from 1"),
        ({"min_confidence": 1.5}, "min_confidence must be from 0 to 1"),
    ],
    ids=["views-without-box", "filter-without-box", "outside", "too-small", "too-many-views", "confidence"],
)
def test_bad_region_arguments_are_refused(birds: RarTools, scene: str, arguments: dict, expected: str) -> None:
    with pytest.raises(RegionError, match=expected):
        birds.retrieve("birds", scene, k=3, **arguments)


def test_car_filter_keeps_what_passes_and_reports_the_rest(tmp_path: Path, clip_model: str, scene: str) -> None:
    tools = RarTools(Settings(data_dir=tmp_path / "d", clip_model=clip_model, no_ranker=True, car_threshold=0.9))
    tools.add_labels("birds", BIRDS, hierarchy=HIERARCHY)
    unfiltered = tools.retrieve("birds", scene, k=5, box=BOX)
    filtered = tools.retrieve("birds", scene, k=5, box=BOX, car_filter=True)
    kept = [c.label for c in filtered.candidates]
    assert len(kept) == 1 and filtered.region.filter_rounds >= 1  # at 0.9 at most one label can pass
    assert sorted(kept + filtered.region.filtered_out) == sorted(c.label for c in unfiltered.candidates)
    assert filtered.candidates[0].probability == pytest.approx(1.0)
    assert "filter_s" in filtered.timings


# -- hierarchy ---------------------------------------------------------------------------------------
def test_levels_sum_the_candidates_probabilities(birds: RarTools, scene: str) -> None:
    levels = birds.retrieve("birds", scene, k=5, box=BOX).levels
    assert {c.name for c in levels.categories} == {"gull", "tern", "jay"}
    assert sum(c.probability for c in levels.categories) == pytest.approx(1.0)
    assert sum(p.probability for p in levels.parents) == pytest.approx(1.0)
    gull = next(c for c in levels.categories if c.name == "gull")
    assert sorted(gull.labels) == ["Herring Gull", "Western Gull"]


def test_no_min_confidence_answers_with_the_best_label(birds: RarTools, scene: str) -> None:
    result = birds.retrieve("birds", scene, k=5, box=BOX)
    answer = result.levels.answer
    assert (answer.level, answer.name) == ("label", result.candidates[0].label)
    assert answer.probability == pytest.approx(result.candidates[0].probability)


def test_every_candidate_under_one_parent_makes_the_parent_certain(tools: RarTools, scene: str) -> None:
    tools.add_labels("gulls", BIRDS[:3], hierarchy=HIERARCHY[:3])
    answer = tools.retrieve("gulls", scene, k=3, box=BOX, min_confidence=0.999).levels.answer
    assert (answer.level, answer.name) == ("parent", "Laridae")
    assert answer.probability == pytest.approx(1.0)


# -- adding regions ------------------------------------------------------------------------------------
def test_a_region_is_stored_as_its_crop_once(tools: RarTools, scene: str) -> None:
    first = tools.add_images("m", [scene], "red square", box=BOX)
    again = tools.add_images("m", [scene], "red square", box=BOX)
    other = tools.add_images("m", [scene], "blue square", box=OTHER_BOX)
    assert (first.added, again.added, again.already_present, other.added) == (1, 0, 1, 1)
    stored = sorted((tools.store.images_dir).rglob("*.jpg"))
    assert len(stored) == 2 and all(Image.open(p).size == (224, 224) for p in stored)


def test_a_bad_box_stores_nothing(tools: RarTools, scene: str) -> None:
    with pytest.raises(RegionError, match="lies outside"):
        tools.add_images("m", [scene], "red square", box=[300, 300, 400, 400])
    assert not tools.store.exists("m")


# -- recognition -----------------------------------------------------------------------------------
def test_regions_in_one_batch_match_one_box_at_a_time(qwen_tools: RarTools, scene: str) -> None:
    boxes = [BOX, OTHER_BOX, [0, 0, 160, 120]]
    batched = qwen_tools.recognize_regions("birds", scene, boxes, k=4, views=3)
    assert len(batched.regions) == 3 and batched.image_size == [160, 120]
    for box, together in zip(boxes, batched.regions):
        alone = qwen_tools.recognize("birds", scene, k=4, box=box, views=3)
        assert together.label == alone.label
        assert [c.label for c in together.ranking.ranked] == [c.label for c in alone.ranking.ranked]
        assert [c.score for c in together.ranking.ranked] == pytest.approx([c.score for c in alone.ranking.ranked])
        assert together.retrieval.region.box == alone.retrieval.region.box


def test_recognised_region_levels_come_from_the_ranking(qwen_tools: RarTools, scene: str) -> None:
    result = qwen_tools.recognize("birds", scene, k=5, box=BOX, min_confidence=0.0)
    assert result.ranking is not None and result.label == result.ranking.best
    ranked = {c.label: c.score for c in result.ranking.ranked}
    gull = next(c for c in result.levels.categories if c.name == "gull")
    assert gull.probability == pytest.approx(sum(ranked[label] for label in gull.labels))
    assert result.levels.answer.name == result.label
    assert set(result.timings) == {"retrieve_s", "rank_s", "total_s"}


@pytest.mark.parametrize("ranker_view", ["crop", "prompt"])
def test_ranker_sees_the_region_with_its_context(qwen_tools: RarTools, scene: str, ranker_view: str) -> None:
    result = qwen_tools.recognize("birds", scene, k=3, box=BOX, ranker_view=ranker_view, ranker_context=True)
    assert sorted(c.label for c in result.ranking.ranked) == sorted(c.label for c in result.retrieval.candidates)


def test_rank_a_region_directly(qwen_tools: RarTools, scene: str) -> None:
    out = qwen_tools.rank(scene, ["Blue Jay", "Herring Gull"], box=BOX, ranker_view="prompt")
    assert sorted(c.label for c in out.ranked) == ["Blue Jay", "Herring Gull"]


def test_single_image_rankers_refuse_a_context_image(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, scene: str
) -> None:
    tools = ranking_tools(tmp_path, clip_model, tiny_models_dir, ranker="llava")
    with pytest.raises(RankerError, match="one image per prompt"):
        tools.recognize("birds", scene, k=3, box=BOX, ranker_context=True)


@pytest.mark.parametrize("boxes", [[], [BOX] * 101], ids=["none", "too-many"])
def test_box_count_is_bounded(qwen_tools: RarTools, scene: str, boxes: list) -> None:
    with pytest.raises(RegionError, match="give a list of 1 to 100 boxes"):
        qwen_tools.recognize_regions("birds", scene, boxes)


# -- detector --------------------------------------------------------------------------------------
def test_detector_loads_on_first_use_and_finds_boxes_to_recognise(qwen_tools: RarTools, scene: str) -> None:
    assert qwen_tools.detector.state == "not started"
    found = qwen_tools.detect(scene, ["a red square", "a blue square"], threshold=0.0, max_boxes=5)
    assert qwen_tools.detector.state == "ready"
    scores = [d.score for d in found.detections]
    assert 1 <= len(scores) <= 5 and scores == sorted(scores, reverse=True)
    assert all(0 <= d.box[0] < d.box[2] <= 160 and 0 <= d.box[1] < d.box[3] <= 120 for d in found.detections)
    assert {d.query for d in found.detections} <= {"a red square", "a blue square"}
    named = qwen_tools.recognize_regions("birds", scene, [d.box for d in found.detections], k=3)
    assert len(named.regions) == len(found.detections)


def test_detector_threshold_drops_weak_boxes(qwen_tools: RarTools, scene: str) -> None:
    every = qwen_tools.detect(scene, ["a red square"], threshold=0.0, max_boxes=100).detections
    cut = sorted(d.score for d in every)[len(every) // 2]
    strong = qwen_tools.detect(scene, ["a red square"], threshold=cut, max_boxes=100).detections
    assert strong and len(strong) < len(every) and all(d.score >= cut for d in strong)


@pytest.mark.parametrize(
    "queries, expected",
    [([], "give 1 to 50 text queries"), (["bird", " "], "query is empty"), (["bird", "bird"], "distinct")],
)
def test_detector_queries_are_checked(qwen_tools: RarTools, scene: str, queries: list, expected: str) -> None:
    with pytest.raises(DetectorError, match=expected):
        qwen_tools.detect(scene, queries)


def test_a_model_that_is_no_detector_is_refused(tmp_path: Path, tiny_models_dir: Path, scene: str) -> None:
    tools = RarTools(Settings(data_dir=tmp_path / "d", no_ranker=True, detector_model=str(tiny_models_dir / "mllm")))
    with pytest.raises(ModelLoadError, match="detector model"):
        tools.detect(scene, ["a bird"])


def test_batched_region_retrieval_matches_one_box_at_a_time(birds: RarTools, scene: str) -> None:
    boxes = [BOX, OTHER_BOX]
    together = birds.retrieve_regions("birds", scene, boxes, k=4, views=3)
    for box, batched in zip(boxes, together):
        alone = birds.retrieve("birds", scene, k=4, box=box, views=3)
        assert [c.label for c in batched.candidates] == [c.label for c in alone.candidates]
        assert [c.score for c in batched.candidates] == pytest.approx([c.score for c in alone.candidates], abs=1e-5)
