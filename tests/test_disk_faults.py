"""Disk faults of the data folder on real file systems the tests mount (a read-only bind mount, a small
tmpfs that fills up): every refusal names the condition, a refused call changes nothing, a call that
fails half-way stores nothing or says what it stored, and a store that opens read-only or full still
serves its memories for reading."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from filesystems import fill, read_only, small_disk
from mcp import Client
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.errors import MemoryStoreError
from rar_tools.memory import MemoryStore
from rar_tools.memory.index import open_persistent_client
from rar_tools.server import create_server
from rar_tools.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def noise_images(folder: Path, count: int, side: int = 500, seed: int = 0) -> list[str]:
    """`count` noisy PNGs whose exemplar copies are large (noise compresses badly)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        pixels = np.random.default_rng(seed + n).integers(0, 255, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{seed + n}.png")
        paths.append(str(folder / f"{seed + n}.png"))
    return paths


def state(tools: RarTools) -> tuple[int, list[str]]:
    """The entries of memory 'm' and the exemplar files on disk."""
    files = sorted(p.name for p in tools.store.images_dir.rglob("*") if p.is_file())
    return tools.store.count("m"), files


def make_tools(data_dir: Path, clip_model: str, **settings) -> RarTools:
    return RarTools(Settings(data_dir=data_dir, clip_model=clip_model, no_ranker=True, **settings))


@contextmanager
def holding(tmp_path: Path, clip_model: str, count: int, side: int = 500, **settings) -> Iterator[RarTools]:
    """Tools on `tmp_path/data` whose memory 'm' holds `count` exemplar images of label 'a'; closed after."""
    tools = make_tools(tmp_path / "data", clip_model, **settings)
    tools.add_images("m", noise_images(tmp_path / "in", count, side), "a")
    try:
        yield tools
    finally:
        tools.close()


@pytest.fixture
def four_stored(tmp_path: Path, clip_model: str) -> Iterator[RarTools]:
    """Tools whose memory 'm' holds four exemplar images of label 'a'."""
    with holding(tmp_path, clip_model, 4) as tools:
        yield tools


# -- a read-only images folder ------------------------------------------------------------------
def test_an_add_to_a_read_only_images_folder_is_refused_by_name_and_changes_nothing(
    four_stored: RarTools, tmp_path: Path
) -> None:
    before = state(four_stored)
    with read_only(four_stored.store.images_dir):
        with pytest.raises(MemoryStoreError, match="is read-only: adding to memory 'm' refused, nothing changed"):
            four_stored.add_images("m", noise_images(tmp_path / "more", 2, seed=10), "b")
    assert state(four_stored) == before


def test_a_removal_from_a_read_only_images_folder_is_refused_and_removes_nothing(four_stored: RarTools) -> None:
    before = state(four_stored)
    with read_only(four_stored.store.images_dir):
        with pytest.raises(MemoryStoreError, match="is read-only: removing from memory 'm' refused, nothing changed"):
            four_stored.remove("m", label="a")
        assert state(four_stored) == before
    assert four_stored.remove("m", label="a").removed == 4  # writable again: the same call works


@pytest.mark.anyio
async def test_the_tools_name_a_read_only_data_folder(four_stored: RarTools, tmp_path: Path) -> None:
    image = noise_images(tmp_path / "more", 1, seed=20)[0]
    with read_only(four_stored.store.images_dir):
        async with Client(create_server(four_stored)) as client:
            added = await client.call_tool("add_to_memory", {"memory": "m", "label": "b", "images": [image]})
            removed = await client.call_tool("remove_from_memory", {"memory": "m", "label": "a"})
            listed = await client.call_tool("list_memories", {})
    for result in (added, removed):
        assert (
            result.is_error and "is read-only" in result.content[0].text and "nothing changed" in result.content[0].text
        )
    assert listed.structured_content["memories"][0]["count"] == 4


# -- a full disk --------------------------------------------------------------------------------
@pytest.fixture
def small_images_disk(tmp_path: Path, clip_model: str) -> Iterator[RarTools]:
    """Tools whose `images/` folder is a 5 MiB tmpfs holding one exemplar of memory 'm'."""
    with small_disk(tmp_path / "data" / "images", "5m"), holding(tmp_path, clip_model, 1, batch_size=64) as tools:
        yield tools


def test_an_add_that_fills_the_disk_half_way_stores_nothing_and_leaves_no_file(
    small_images_disk: RarTools, tmp_path: Path
) -> None:
    before = state(small_images_disk)
    images = noise_images(tmp_path / "many", 40, seed=100)  # about 10 MB of copies for 5 MiB of disk
    with pytest.raises(MemoryStoreError, match="is full .*: adding to memory 'm' failed .*; nothing was stored"):
        small_images_disk.add_images("m", images, "b")
    assert state(small_images_disk) == before
    assert small_images_disk.add_images("m", images[:2], "b").added == 2  # the space it used is free again


def test_an_add_to_a_full_disk_is_refused_by_name_and_changes_nothing(
    small_images_disk: RarTools, tmp_path: Path
) -> None:
    fill(small_images_disk.store.images_dir, leave_bytes=2**20)
    before = state(small_images_disk)
    with pytest.raises(MemoryStoreError, match=r"is full \([\d,]+ bytes free\): adding to memory 'm' refused"):
        small_images_disk.add_images("m", noise_images(tmp_path / "more", 1, seed=30), "b")
    assert state(small_images_disk) == before


def test_a_removal_on_a_full_disk_is_allowed_and_frees_space(small_images_disk: RarTools) -> None:
    fill(small_images_disk.store.images_dir, leave_bytes=2**20)
    assert small_images_disk.remove("m", label="a").removed == 1
    assert small_images_disk.store.count("m") == 0


def test_a_batch_failing_half_way_through_a_call_says_what_earlier_batches_stored(
    tmp_path: Path, clip_model: str
) -> None:
    with small_disk(tmp_path / "data" / "images", "6m"):
        tools = make_tools(tmp_path / "data", clip_model, batch_size=8)
        images = noise_images(tmp_path / "many", 48, seed=200)
        with pytest.raises(MemoryStoreError, match=r"Earlier in this call \d+ of the 48 images were stored"):
            tools.add_images("m", images, "b")
        stored = tools.store.count("m")
        assert stored > 0 and len(list(tools.store.images_dir.rglob("*.jpg"))) == stored  # no unreferenced copy
        tools.close()


# -- an index folder that cannot be written when the store opens --------------------------------
def stored_then_closed(tmp_path: Path, clip_model: str) -> Path:
    """A data folder whose memory 'm' holds two exemplars, no longer open."""
    with holding(tmp_path, clip_model, 2, side=32):
        return tmp_path / "data"


@pytest.mark.anyio
async def test_a_read_only_index_at_start_serves_reads_and_refuses_writes_by_name(
    tmp_path: Path, clip_model: str
) -> None:
    data_dir = stored_then_closed(tmp_path, clip_model)
    image = noise_images(tmp_path / "query", 1, side=32, seed=50)[0]
    with read_only(data_dir / "chroma"):
        tools = make_tools(data_dir, clip_model)
        async with Client(create_server(tools)) as client:
            listed = await client.call_tool("list_memories", {})
            found = await client.call_tool("retrieve_candidates", {"memory": "m", "image": image})
            removed = await client.call_tool("remove_from_memory", {"memory": "m", "label": "a"})
            added = await client.call_tool("add_to_memory", {"memory": "m", "labels": ["b"]})
        tools.close()
    assert not listed.is_error and listed.structured_content["memories"][0]["count"] == 2
    assert not found.is_error and found.structured_content["candidates"][0]["label"] == "a"
    for result in (removed, added):
        assert result.is_error and "is read-only" in result.content[0].text
        assert "served from a read-only copy" in result.content[0].text
    assert MemoryStore(data_dir).count("m") == 2


def test_a_full_disk_at_start_serves_reads_and_refuses_adds_by_name(tmp_path: Path, clip_model: str) -> None:
    with small_disk(tmp_path / "data", "40m"):
        data_dir = stored_then_closed(tmp_path, clip_model)
        fill(data_dir, leave_bytes=2**20)
        tools = make_tools(data_dir, clip_model)
        assert tools.list_memories().memories[0].count == 2
        with pytest.raises(MemoryStoreError, match=r"is full \([\d,]+ bytes free\): adding to memory 'm' refused"):
            tools.add_labels("m", ["b"])
        tools.close()


def test_a_second_open_of_an_unwritable_index_names_the_cause_again(tmp_path: Path, clip_model: str) -> None:
    data_dir = stored_then_closed(tmp_path, clip_model)
    with read_only(data_dir / "chroma"):
        for _ in range(2):  # Chroma's second open used to fail with "'RustBindingsAPI' ... 'bindings'"
            with pytest.raises(MemoryStoreError, match="is read-only: cannot open the memory index"):
                open_persistent_client(data_dir / "chroma")


def test_a_wholly_read_only_data_folder_is_served_for_reading(tmp_path: Path, clip_model: str) -> None:
    data_dir = stored_then_closed(tmp_path, clip_model)
    with read_only(data_dir):
        tools = make_tools(data_dir, clip_model)
        assert tools.list_memories().memories[0].count == 2
        with pytest.raises(MemoryStoreError, match="is read-only: removing from memory 'm' refused"):
            tools.remove("m", label="a")
        tools.close()


# -- unreferenced exemplar files ----------------------------------------------------------------
def test_exemplar_files_no_entry_references_are_collected_when_the_store_opens(tmp_path: Path, clip_model: str) -> None:
    data_dir = stored_then_closed(tmp_path, clip_model)
    kept = sorted((data_dir / "images").rglob("*.jpg"))
    orphans = [data_dir / "images" / sha[:2] / f"{sha}.jpg" for sha in ("ab" * 32, "cd" * 32)]
    for orphan in orphans:  # what a process killed between writing a copy and storing its entry leaves
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(kept[0].read_bytes())
    store = MemoryStore(data_dir)
    try:
        assert store.orphans is not None and store.orphans.wait(60)
        assert (store.orphans.collected, store.orphans.checked) == (2, 4)
        assert sorted((data_dir / "images").rglob("*.jpg")) == kept
    finally:
        store.close()


def test_the_collection_of_unreferenced_files_is_logged(tmp_path: Path, clip_model: str, caplog) -> None:
    data_dir = stored_then_closed(tmp_path, clip_model)
    orphan = data_dir / "images" / "ef" / f"{'ef' * 32}.jpg"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left behind")
    with caplog.at_level("INFO", logger="rar_tools"):
        store = MemoryStore(data_dir)
        store.orphans.wait(60)
        store.close()
    assert "collected 1 exemplar file(s) that no entry referenced" in caplog.text
