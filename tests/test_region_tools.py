"""Region tools through the MCP protocol: schemas, box arguments, detect then recognise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.server import create_server
from rar_tools.settings import Settings

pytestmark = pytest.mark.anyio
BIRDS = ["Herring Gull", "Western Gull", "Blue Jay"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def scene(tmp_path: Path) -> str:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    pixels[20:70, 30:90] = (220, 30, 30)
    path = tmp_path / "scene.png"
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def full_tools(tmp_path: Path, clip_model: str, tiny_models_dir: Path) -> RarTools:
    return RarTools(
        Settings(
            data_dir=tmp_path / "data",
            clip_model=clip_model,
            ranker_model=str(tiny_models_dir / "mllm"),
            detector_model=str(tiny_models_dir / "detector"),
        )
    )


async def call(client: Client, name: str, **arguments):
    return await client.call_tool(name, arguments)


async def test_region_tools_are_listed_read_only_with_typed_limits(tools: RarTools) -> None:
    async with Client(create_server(tools)) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("recognize_regions", "detect_objects"):
        assert listed[name].annotations.read_only_hint and listed[name].output_schema is not None
    retrieve = listed["retrieve_candidates"].input_schema["properties"]
    box = retrieve["box"]["anyOf"][0]
    assert (box["minItems"], box["maxItems"]) == (4, 4)
    assert (retrieve["views"]["minimum"], retrieve["views"]["maximum"]) == (1, 5)
    assert (retrieve["min_confidence"]["minimum"], retrieve["min_confidence"]["maximum"]) == (0, 1)
    boxes = listed["recognize_regions"].input_schema["properties"]["boxes"]
    assert (boxes["minItems"], boxes["maxItems"]) == (1, 100)
    for name in ("add_to_memory", "rank_candidates", "recognize"):
        assert "box" in listed[name].input_schema["properties"]


async def test_retrieve_a_region_gives_region_and_levels(tools: RarTools, scene: str) -> None:
    async with Client(create_server(tools)) as client:
        await call(client, "add_to_memory", memory="birds", labels=BIRDS[:2], category="gull", parent="Laridae")
        result = await call(
            client, "retrieve_candidates", memory="birds", image=scene, k=2, box=[30, 20, 90, 70], views=3
        )
    content = result.structured_content
    assert not result.is_error and content["region"]["box"] == [30, 20, 90, 70]
    assert content["levels"]["categories"][0]["name"] == "gull"
    assert content["levels"]["categories"][0]["probability"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "name, arguments, expected",
    [
        ("retrieve_candidates", {"box": [200, 200, 300, 300]}, "lies outside the 140x100 image"),
        ("retrieve_candidates", {"box": [1, 2, 3]}, "at least 4 items"),
        ("retrieve_candidates", {"views": 3}, "give a box"),
        ("add_to_memory", {"labels": ["x"], "box": [0, 0, 10, 10]}, "`box` goes with `images`"),
    ],
    ids=["outside", "three-numbers", "views-without-box", "box-with-labels"],
)
async def test_bad_region_input_is_an_error_result(tools: RarTools, scene: str, name, arguments, expected) -> None:
    async with Client(create_server(tools)) as client:
        await call(client, "add_to_memory", memory="birds", labels=BIRDS)
        base = {"memory": "birds"} if name == "add_to_memory" else {"memory": "birds", "image": scene}
        result = await call(client, name, **{**base, **arguments})
    assert result.is_error and expected in result.content[0].text


async def test_detect_then_recognise_the_boxes(full_tools: RarTools, scene: str) -> None:
    async with Client(create_server(full_tools)) as client:
        await call(client, "add_to_memory", memory="birds", labels=BIRDS)
        found = await call(client, "detect_objects", image=scene, queries=["a bird"], threshold=0.0, max_boxes=3)
        boxes = [d["box"] for d in found.structured_content["detections"]]
        named = await call(client, "recognize_regions", memory="birds", image=scene, boxes=boxes, k=2)
    assert not found.is_error and 1 <= len(boxes) <= 3
    assert found.structured_content["image_size"] == [140, 100]
    regions = named.structured_content["regions"]
    assert not named.is_error and [r["retrieval"]["region"]["box"] for r in regions] == boxes
    assert all(r["label"] in BIRDS for r in regions)


async def test_recognize_a_region_with_the_ranker_seeing_its_context(full_tools: RarTools, scene: str) -> None:
    async with Client(create_server(full_tools)) as client:
        await call(client, "add_to_memory", memory="birds", labels=BIRDS)
        result = await call(
            client, "recognize", memory="birds", image=scene, k=3, box=[30, 20, 90, 70], ranker_context=True
        )
    assert not result.is_error and result.structured_content["label"] in BIRDS
    assert len(result.structured_content["ranking"]["ranked"]) == 3
