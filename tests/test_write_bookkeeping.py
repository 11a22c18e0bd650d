"""What a write keeps beside the index (per-label counts in the catalogue, the in-process mirror) changes
only when the write itself did: a refused write leaves both as they were, a write failing half-way on a
full disk leaves them agreeing with what was stored, and the upkeep commands (import, relabel, re-embed)
are refused on a read-only data folder with nothing changed. Real file systems mounted by the tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from filesystems import read_only, small_disk
from test_disk_faults import make_tools, noise_images

from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import MemoryStoreError
from rar_tools.memory import MemoryStore, NewEntry
from rar_tools.memory.mirror import Mirror

pytest.importorskip("faiss")


def wait_for_mirror(store: MemoryStore, memory: str = "m") -> Mirror:
    """The up-to-date mirror of `memory`, waiting for its build (a search starts it)."""
    deadline = time.monotonic() + 60
    while (mirror := store.mirrors.current(memory)) is None:
        assert time.monotonic() < deadline, "the memory was not mirrored"
        time.sleep(0.05)
    return mirror


def live_ids(mirror: Mirror) -> set[str]:
    return {row[0] for n, row in enumerate(mirror.rows) if n not in mirror.removed}


def test_a_refused_write_leaves_the_counts_and_the_mirror_as_they_were(tmp_path: Path, clip_model: str) -> None:
    tools = make_tools(tmp_path / "data", clip_model)
    tools.add_images("m", noise_images(tmp_path / "in", 2, side=32), "a")
    mirror = wait_for_mirror(tools.store)
    with read_only(tools.store.images_dir):
        with pytest.raises(MemoryStoreError, match="adding to memory 'm' refused, nothing changed"):
            tools.add_images("m", noise_images(tmp_path / "more", 1, side=32, seed=50), "b")
        with pytest.raises(MemoryStoreError, match="removing from memory 'm' refused, nothing changed"):
            tools.store.remove("m", label="a")
    assert tools.store.mirrors.current("m") is mirror  # still current: nothing to rebuild
    assert tools.store.label_counts("m") == {("a", "image"): 2}
    tools.close()


def unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_an_add_failing_on_a_full_index_leaves_counts_and_mirror_agreeing_with_the_index(tmp_path: Path) -> None:
    """Chroma may keep entries of a batch it reports failed (here the first batch, logged before its
    index ran out of room): the error counts them, and the counts and the mirror follow the index."""
    identity = EncoderIdentity(model="test", pretrained="none", dim=512)
    with small_disk(tmp_path / "data" / "chroma", "30m"):
        store = MemoryStore(tmp_path / "data")
        store.add("m", identity, [NewEntry("first", "text", "first", unit_vectors(1, 512)[0])])
        query = unit_vectors(1, 512, seed=1)[0]
        store.nearest("m", identity, query, 5)
        wait_for_mirror(store)
        many = unit_vectors(3 * store.index.max_batch, 512, seed=2)
        with pytest.raises(MemoryStoreError, match=r"is full .* \d+ entries were stored before it failed"):
            store.add("m", identity, [NewEntry(f"l{i % 9}", "text", f"s{i}", v) for i, v in enumerate(many)])
        held = {entry for ids, _ in store.index.pages(store.index.get("m")) for entry in ids}
        assert sum(store.label_counts("m").values()) == len(held)
        store.nearest("m", identity, query, 5)
        assert live_ids(wait_for_mirror(store)) == held
        store.close()


def test_import_into_a_read_only_data_folder_is_refused_and_changes_nothing(tmp_path: Path, clip_model: str) -> None:
    source = make_tools(tmp_path / "source", clip_model)
    source.add_images("m", noise_images(tmp_path / "in", 2, side=32), "a")
    archive = tmp_path / "m.rar-memory"
    source.export("m", str(archive))
    source.close()
    tools = make_tools(tmp_path / "data", clip_model)
    tools.add_images("other", noise_images(tmp_path / "other", 1, side=32, seed=9), "x")
    with read_only(tools.store.images_dir):
        with pytest.raises(MemoryStoreError, match="is read-only: importing into memory 'm' refused, nothing changed"):
            tools.import_memory(str(archive))
    assert tools.store.names() == ["other"]
    tools.close()


def test_relabel_on_a_read_only_images_folder_is_refused_and_moves_nothing(tmp_path: Path, clip_model: str) -> None:
    tools = make_tools(tmp_path / "data", clip_model)
    tools.add_images("m", noise_images(tmp_path / "in", 2, side=32), "a")
    with read_only(tools.store.images_dir):
        with pytest.raises(MemoryStoreError, match="is read-only: relabelling entries of memory 'm' refused"):
            tools.relabel("m", "b", label="a")
    assert tools.store.label_counts("m") == {("a", "image"): 2}
    tools.close()


def test_closing_a_store_stops_its_mirror_builds(tmp_path: Path) -> None:
    identity = EncoderIdentity(model="test", pretrained="none", dim=8)
    vectors = np.random.default_rng(0).normal(size=(20_000, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = MemoryStore(tmp_path)
    store.add("m", identity, [NewEntry(f"l{i % 50}", "image", f"s{i}", v) for i, v in enumerate(vectors)])
    store.nearest("m", identity, vectors[0], 5)  # starts the mirror's build
    building = [t for t in threading.enumerate() if t.name == "mirror-m"]
    store.close()
    if not building:
        pytest.skip("the mirror was built before the store closed")
    assert not building[0].is_alive()
    assert store.mirrors.current("m") is None
