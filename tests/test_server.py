"""The MCP tools through an in-process client: schemas, annotations, results and errors."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest
from conftest import held_back
from mcp import Client

from rar_tools.api import RarTools
from rar_tools.server import create_server
from rar_tools.settings import Settings

pytestmark = pytest.mark.anyio
TOOLS = {"add_to_memory", "retrieve_candidates", "list_memories", "remove_from_memory"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(tools: RarTools):
    return create_server(tools)


async def call(client: Client, name: str, **arguments):
    return await client.call_tool(name, arguments)


async def test_tools_are_listed_with_input_and_output_schemas(server) -> None:
    async with Client(server) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert TOOLS <= set(listed)
    for tool in listed.values():
        assert tool.input_schema["type"] == "object" and tool.output_schema is not None
        assert tool.description
    k = listed["retrieve_candidates"].input_schema["properties"]["k"]
    assert (k["minimum"], k["maximum"]) == (1, 50)


async def test_annotations_say_what_each_tool_does(server) -> None:
    async with Client(server) as client:
        listed = {t.name: t.annotations for t in (await client.list_tools()).tools}
    assert listed["retrieve_candidates"].read_only_hint and listed["list_memories"].read_only_hint
    assert listed["remove_from_memory"].destructive_hint and listed["remove_from_memory"].idempotent_hint
    assert not listed["add_to_memory"].read_only_hint and listed["add_to_memory"].idempotent_hint
    assert not listed["add_to_memory"].destructive_hint


async def test_add_then_retrieve_gives_structured_results(server, image_folder: Path) -> None:
    async with Client(server) as client:
        for colour in ("red", "blue"):
            added = await call(
                client,
                "add_to_memory",
                memory="colours",
                label=colour,
                images=[str(image_folder / colour / "0.png"), str(image_folder / colour / "1.png")],
            )
            assert not added.is_error and added.structured_content["added"] == 2
        result = await call(
            client, "retrieve_candidates", memory="colours", image=str(image_folder / "red" / "2.png"), k=2
        )
    assert not result.is_error
    candidates = result.structured_content["candidates"]
    assert sorted(c["label"] for c in candidates) == ["blue", "red"]
    assert result.structured_content["kinds_searched"] == ["image"]


async def test_label_texts_are_added_and_listed(server) -> None:
    async with Client(server) as client:
        added = await call(client, "add_to_memory", memory="zs", labels=["Blue Jay", "Herring Gull"], category="bird")
        listing = await call(client, "list_memories")
    assert added.structured_content["kind"] == "text" and added.structured_content["added"] == 2
    memory = listing.structured_content["memories"][0]
    assert memory["name"] == "zs" and memory["kinds"] == {"text": 2}


async def test_remove_from_memory_by_label(server, image_folder: Path) -> None:
    async with Client(server) as client:
        await call(client, "add_to_memory", memory="m", labels=["a", "b"])
        removed = await call(client, "remove_from_memory", memory="m", label="a")
    assert removed.structured_content == {"memory": "m", "removed": 1, "count": 1}


async def test_initialize_answers_while_the_encoder_is_still_loading(settings: Settings, image_folder: Path) -> None:
    tools = RarTools(settings)
    released = threading.Event()
    tools.components.clip = held_back("CLIP encoder", tools.components._load_encoder, released)
    async with Client(create_server(tools)) as client:
        await client.list_tools()  # answered although the encoder cannot finish loading yet
        assert tools.clip.state == "loading"
        released.set()
        result = await call(
            client, "add_to_memory", memory="m", label="red", images=[str(image_folder / "red" / "0.png")]
        )
    assert not result.is_error and result.structured_content["added"] == 1


async def test_a_failed_model_load_is_reported_clearly(tmp_path: Path) -> None:
    tools = RarTools(Settings(data_dir=tmp_path / "d", clip_model=f"local-dir:{tmp_path / 'missing'}", no_ranker=True))
    async with Client(create_server(tools)) as client:
        result = await call(client, "add_to_memory", memory="m", labels=["x"])
        listing = await call(client, "list_memories")
    assert result.is_error and "could not load CLIP model" in result.content[0].text
    assert not listing.is_error  # memory listing needs no model


async def test_progress_is_reported_while_adding(server, image_folder: Path) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    images = [str(p) for p in sorted((image_folder / "red").iterdir())]
    async with Client(server) as client:
        await client.call_tool(
            "add_to_memory", {"memory": "m", "label": "red", "images": images}, progress_callback=on_progress
        )
        with anyio.fail_after(30):  # the client hands notifications to the callback in tasks of their own
            while (3, 3) not in seen:
                await anyio.sleep(0.01)
    assert seen[-1] == (3, 3)
