"""What a host shows: exemplar thumbnails, memory resources, the workflow prompt, progress."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.server import create_server
from rar_tools.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def filled(tools: RarTools, image_folder: Path) -> RarTools:
    """A memory 'colours' with two exemplars of red and blue, and a label text 'purple'."""
    for colour in ("red", "blue"):
        tools.add_images("colours", [str(image_folder / colour / f"{n}.png") for n in range(2)], colour)
    tools.add_labels("colours", ["purple"])
    return tools


async def retrieve(client: Client, image: Path, **extra):
    return await client.call_tool(
        "retrieve_candidates", {"memory": "colours", "image": str(image), "k": 3, "mode": "auto", **extra}
    )


async def test_thumbnails_show_the_best_exemplar_of_each_image_candidate(filled, image_folder: Path) -> None:
    async with Client(create_server(filled)) as client:
        result = await retrieve(client, image_folder / "red" / "2.png", thumbnails=True)
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 2  # red and blue have exemplars; the label text 'purple' has none
    total = sum(len(base64.b64decode(c.data)) for c in images)
    assert total < 1_000_000
    for block in images:
        with Image.open(io.BytesIO(base64.b64decode(block.data))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 128
    assert len(result.structured_content["candidates"]) == 3


async def test_without_thumbnails_only_the_result_text_comes_back(filled, image_folder: Path) -> None:
    async with Client(create_server(filled)) as client:
        result = await retrieve(client, image_folder / "red" / "2.png")
    assert [c.type for c in result.content] == ["text"]
    assert json.loads(result.content[0].text) == result.structured_content


async def test_recognize_can_return_thumbnails(
    tmp_path: Path, clip_model: str, tiny_models_dir: Path, image_folder: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "d", clip_model=clip_model, ranker_model=str(tiny_models_dir / "mllm"))
    tools = RarTools(settings)
    for colour in ("red", "green"):
        tools.add_images("colours", [str(image_folder / colour / "0.png")], colour)
    seen = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(create_server(tools)) as client:
        result = await client.call_tool(
            "recognize",
            {"memory": "colours", "image": str(image_folder / "red" / "1.png"), "thumbnails": True},
            progress_callback=on_progress,
        )
    assert not result.is_error, result.content
    assert sum(c.type == "image" for c in result.content) == 2
    assert result.structured_content["ranking"] is not None
    assert seen[-1] == 2


async def test_memory_resources_list_describe_and_serve_exemplars(filled, image_folder: Path) -> None:
    red = filled.retrieve("colours", str(image_folder / "red" / "0.png"), k=1, mode="image")
    entry = red.candidates[0].entry_ids[0]
    async with Client(create_server(filled)) as client:
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        listing = json.loads((await client.read_resource("memory://")).contents[0].text)
        memory = json.loads((await client.read_resource("memory://colours")).contents[0].text)
        image = (await client.read_resource(f"memory://colours/{entry}")).contents[0]
    assert {"memory://{name}", "memory://{name}/{entry_id}"} <= templates
    assert [m["name"] for m in listing["memories"]] == ["colours"]
    assert memory["labels"] == {"red": 2, "blue": 2, "purple": 1} and memory["kinds"] == {"image": 4, "text": 1}
    assert image.mime_type == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(image.blob))) as stored:
        assert stored.format == "JPEG"


def damage(path: Path, how: str) -> None:
    """Make a stored exemplar file missing, or damaged (bytes that are not an image)."""
    if how == "missing":
        path.unlink()
    else:
        path.write_bytes(b"\xff\xd8\xff garbage, not a JPEG any more" * 10)


def exemplar_entries(tools: RarTools, image: Path, label: str) -> list[str]:
    """The entry ids supporting `label` when retrieving for `image` (k=3, both kinds)."""
    found = tools.retrieve("colours", str(image), k=3, mode="auto")
    return next(c for c in found.candidates if c.label == label).entry_ids


@pytest.mark.parametrize("how", ["missing", "damaged"])
async def test_thumbnails_skip_a_missing_or_damaged_exemplar_with_a_note(filled, image_folder: Path, how: str) -> None:
    red = exemplar_entries(filled, image_folder / "red" / "2.png", "red")
    assert len(red) == 2
    for entry in red:
        damage(filled.exemplar_file("colours", entry), how)
    async with Client(create_server(filled)) as client:
        result = await retrieve(client, image_folder / "red" / "2.png", thumbnails=True)
    assert not result.is_error, result.content
    notes = [c.text for c in result.content if c.type == "text" and c.text.startswith("no thumbnail of 'red'")]
    assert len(notes) == 2 and all(f"is {how}" in note for note in notes)
    assert sum(c.type == "image" for c in result.content) == 1  # blue's
    assert len(result.structured_content["candidates"]) == 3


async def test_thumbnails_fall_back_to_the_next_exemplar_of_a_candidate(filled, image_folder: Path) -> None:
    best = exemplar_entries(filled, image_folder / "red" / "2.png", "red")[0]
    damage(filled.exemplar_file("colours", best), "damaged")
    async with Client(create_server(filled)) as client:
        result = await retrieve(client, image_folder / "red" / "2.png", thumbnails=True)
    texts = [c.text for c in result.content if c.type == "text"]
    assert any(t.startswith("no thumbnail of 'red'") and best in t for t in texts)
    assert sum(c.type == "image" for c in result.content) == 2  # red's second exemplar, and blue's


@pytest.mark.parametrize("how", ["missing", "damaged"])
async def test_the_resource_of_a_missing_or_damaged_exemplar_says_so(filled, image_folder: Path, how: str) -> None:
    entry = (
        filled.retrieve("colours", str(image_folder / "red" / "0.png"), k=1, mode="image").candidates[0].entry_ids[0]
    )
    damage(filled.exemplar_file("colours", entry), how)
    async with Client(create_server(filled)) as client:
        with pytest.raises(Exception, match=f"stored copy of exemplar entry '{entry}' is {how}"):
            await client.read_resource(f"memory://colours/{entry}")


async def test_unknown_memory_resource_is_an_error(filled) -> None:
    async with Client(create_server(filled)) as client:
        with pytest.raises(MCPError, match="does not exist"):
            await client.read_resource("memory://nothing-here")


async def test_workflow_prompt_explains_retrieve_rank_and_add_on_confirmation(tools: RarTools) -> None:
    async with Client(create_server(tools)) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        prompt = await client.get_prompt("recognize_step_by_step", {"image": "/photos/bird.jpg", "memory": "birds"})
    assert "recognize_step_by_step" in prompts
    body = prompt.messages[0].content.text
    for step in ("retrieve_candidates", "rank_candidates", "add_to_memory", "'birds'", "'/photos/bird.jpg'"):
        assert step in body
