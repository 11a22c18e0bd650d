"""`segment` (CLIP as RNN) with the tiny CLIP: the recurrence, masks in image pixels, labels from a
memory, regions, the overlay, the CLI's mask files, the MCP tool and its refusals. Random weights:
mechanics only, never which label wins."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.cli import main
from rar_tools.errors import RarToolsError, RegionError, SegmentationError
from rar_tools.segmentation import rle
from rar_tools.segmentation.gradcam import open_clip_tower
from rar_tools.segmentation.recurrence import CarSettings, classify, segment_view
from rar_tools.server import create_server

LABELS = ["a red square", "noise", "a bird", "sky", "grass", "a car"]


@pytest.fixture
def view(scene: str) -> Image.Image:
    return Image.open(scene).convert("RGB").resize((32, 32))


def recurrence(tools: RarTools, view: Image.Image, **settings):
    encoder = tools.encoder
    texts = encoder.encode_labels(LABELS)
    return segment_view(encoder, open_clip_tower(encoder.model, 1), view, texts, CarSettings(**settings))


def test_the_recurrence_drops_labels_until_the_set_is_stable(tools: RarTools, view: Image.Image) -> None:
    outcome = recurrence(tools, view, label_threshold=0.2)
    survivors = {p.label for p in outcome.proposals}
    dropped = [i for round_ in outcome.dropped for i in round_]
    assert outcome.rounds == len(outcome.dropped) >= 1
    assert outcome.dropped[-1] == []  # the last round changed nothing
    assert sorted([*survivors, *dropped]) == list(range(len(LABELS)))
    assert [p.score for p in outcome.proposals] == sorted((p.score for p in outcome.proposals), reverse=True)


def test_when_no_label_passes_the_best_one_survives_alone(tools: RarTools, view: Image.Image) -> None:
    outcome = recurrence(tools, view, label_threshold=0.99)
    assert len(outcome.proposals) == 1 and outcome.rounds == 2
    assert len(outcome.dropped[0]) == len(LABELS) - 1 and outcome.dropped[1] == []
    assert outcome.proposals[0].score == pytest.approx(1.0)  # alone, it takes the whole softmax


def test_the_round_limit_stops_the_recurrence(tools: RarTools, view: Image.Image) -> None:
    outcome = recurrence(tools, view, label_threshold=0.99, max_rounds=1)
    assert outcome.rounds == 1 and len(outcome.proposals) == 1


def test_proposals_are_maps_of_the_view_between_zero_and_one(tools: RarTools, view: Image.Image) -> None:
    for proposal in recurrence(tools, view, label_threshold=0.2).proposals:
        assert proposal.soft.shape == (32, 32)
        assert proposal.soft.min() >= 0 and proposal.soft.max() <= 1


def test_an_empty_proposal_scores_zero(tools: RarTools, view: Image.Image) -> None:
    texts = tools.encoder.encode_labels(LABELS[:2])
    full, empty = np.ones((32, 32), bool), np.zeros((32, 32), bool)
    scores = classify(tools.encoder, view, [full, empty], texts, 2.0)
    assert scores[1] == 0.0 and 0 < scores[0] <= 1


def test_masks_are_rle_of_the_whole_image_with_matching_area_and_box(tools: RarTools, scene: str) -> None:
    result = tools.segment(scene, LABELS[:3])
    assert result.image_size == [140, 100] and result.label_source == "call" and result.labels == LABELS[:3]
    (region,) = result.regions
    assert region.box == [0.0, 0.0, 140.0, 100.0] and region.masks
    for mask in region.masks:
        pixels = rle.decode(mask.rle.model_dump())
        assert pixels.shape == (100, 140) and mask.area == int(pixels.sum())
        rows, cols = np.nonzero(pixels)
        assert mask.box == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    assert result.refinement == "guided filter"


def test_each_box_is_segmented_on_its_own_and_masks_stay_inside_it(tools: RarTools, scene: str) -> None:
    boxes = [[30, 20, 90, 70], [0, 0, 50, 50]]
    result = tools.segment(scene, LABELS[:2], boxes=boxes)
    assert [r.box for r in result.regions] == [[30.0, 20.0, 90.0, 70.0], [0.0, 0.0, 50.0, 50.0]]
    for region, (x1, y1, x2, y2) in zip(result.regions, boxes):
        for mask in region.masks:
            pixels = rle.decode(mask.rle.model_dump())
            assert pixels.sum() == pixels[y1:y2, x1:x2].sum()


def test_one_box_argument_is_one_region(tools: RarTools, scene: str) -> None:
    result = tools.segment(scene, LABELS[:2], box=[0.25, 0.2, 0.75, 0.8], box_normalized=True)
    assert [r.box for r in result.regions] == [[35.0, 20.0, 105.0, 80.0]]


def test_labels_come_from_the_memory_when_none_are_given(tools: RarTools, scene: str) -> None:
    tools.add_labels("things", LABELS[:3])
    result = tools.segment(scene, memory="things")
    assert result.label_source == "memory" and sorted(result.labels) == sorted(LABELS[:3])


def test_the_overlay_is_a_png_of_the_image_size(tools: RarTools, scene: str) -> None:
    from rar_tools.requests import SegmentRequest

    request = SegmentRequest.from_call(scene, LABELS[:2])
    picture = Image.open(io.BytesIO(tools.segmentation.overlay(request, tools.segment(request))))
    assert picture.format == "PNG" and picture.size == (140, 100)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"labels": []}, SegmentationError, "give 1 to 100 labels to segment, got 0"),
        ({"labels": [f"l{i}" for i in range(1000)]}, SegmentationError, "give 1 to 100 labels to segment, got 1000"),
        ({"labels": ["a", "a "]}, SegmentationError, "duplicate labels"),
        ({}, SegmentationError, "give `labels` or `memory`"),
        ({"labels": ["a"], "memory": "m"}, SegmentationError, "not both"),
        ({"labels": ["a"], "box": [0, 0, 9, 9], "boxes": [[0, 0, 9, 9]]}, SegmentationError, "`box` or `boxes`"),
        ({"labels": ["a"], "boxes": [[200, 200, 220, 220]]}, RegionError, "lies outside the 140x100 image"),
        ({"labels": ["a"], "box": [0, 0, 2, 2]}, RegionError, "the minimum is 4 pixels"),
        ({"memory": "nope"}, RarToolsError, "memory 'nope' does not exist"),
    ],
)
def test_bad_arguments_are_refused_with_a_sentence_naming_them(tools, scene, arguments, error, message) -> None:
    with pytest.raises(error, match=message):
        tools.segment(scene, **arguments)


def test_a_one_pixel_image_is_refused(tools: RarTools, tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (200, 0, 0)).save(tmp_path / "dot.png")
    with pytest.raises(SegmentationError, match="the image is 1x1 pixels; segment needs at least 4"):
        tools.segment(str(tmp_path / "dot.png"), ["a"])


def test_a_memory_without_labels_or_with_too_many_is_refused(tools: RarTools, scene: str) -> None:
    tools.add_labels("many", [f"label {i}" for i in range(101)])
    with pytest.raises(SegmentationError, match="holds 101 labels; segment looks for at most 100"):
        tools.segment(scene, memory="many")
    tools.add_labels("empty", ["x"])
    tools.remove("empty", label="x")
    with pytest.raises(SegmentationError, match="holds no labels"):
        tools.segment(scene, memory="empty")


def test_the_cli_prints_the_masks_and_writes_them_as_pngs(tools: RarTools, scene: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "masks"
    flags = ["--data-dir", str(tools.settings.data_dir), "--clip-model", tools.settings.clip_model, "--no-ranker"]
    code = main(["segment", scene, "--labels", "a red square", "noise", "--mask-dir", str(out), "--json", *flags])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    files = sorted(p.name for p in out.glob("region1-*.png"))
    assert len(files) == len(result["regions"][0]["masks"]) and (out / "overlay.png").is_file()
    first = np.asarray(Image.open(out / files[0]))
    assert first.shape == (100, 140) and set(np.unique(first)) <= {0, 255}
    assert int((first == 255).sum()) == result["regions"][0]["masks"][0]["area"]


def test_the_cli_refuses_bad_input_with_exit_code_2(tools: RarTools, scene: str, capsys) -> None:
    flags = ["--data-dir", str(tools.settings.data_dir), "--clip-model", tools.settings.clip_model, "--no-ranker"]
    assert main(["segment", scene, *flags]) == 2
    assert "give `labels` or `memory`" in capsys.readouterr().err


async def call(tools: RarTools, arguments: dict):
    async with Client(create_server(tools)) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        return listed["segment"], await client.call_tool("segment", arguments)


def test_the_mcp_tool_is_read_only_and_returns_structured_masks_and_an_overlay(tools: RarTools, scene: str) -> None:
    tool, result = anyio.run(call, tools, {"image": scene, "labels": LABELS[:2], "overlay": True})
    assert tool.annotations.read_only_hint and not tool.annotations.destructive_hint
    assert tool.output_schema is not None and "boxes" in tool.input_schema["properties"]
    assert not result.is_error
    masks = result.structured_content["regions"][0]["masks"]
    assert masks and set(masks[0]["rle"]) == {"size", "counts"}
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(images[0].data))).size == (140, 100)


def test_the_mcp_tool_without_overlay_returns_no_image(tools: RarTools, scene: str) -> None:
    _, result = anyio.run(call, tools, {"image": scene, "labels": LABELS[:2]})
    assert not result.is_error and [c.type for c in result.content] == ["text"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"labels": []}, "give 1 to 100 labels to segment, got 0"),
        ({"labels": [f"l{i}" for i in range(1000)]}, "give 1 to 100 labels to segment, got 1000"),
        ({"labels": ["a"], "boxes": [[500, 500, 520, 520]]}, "lies outside"),
        ({}, "give `labels` or `memory`"),
    ],
)
def test_the_mcp_tool_refuses_bad_input_by_name(tools: RarTools, scene: str, arguments: dict, message: str) -> None:
    _, result = anyio.run(call, tools, {"image": scene, **arguments})
    assert result.is_error and message in result.content[0].text
