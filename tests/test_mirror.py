"""In-process mirrors of memories (faiss): built in the background, answering like Chroma, updated
by the store's own writes at once, and never answering after another writer changed the memory."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import MemoryStoreError
from rar_tools.memory import MemoryStore, NewEntry

pytest.importorskip("faiss")
IDENTITY = EncoderIdentity(model="test", pretrained="none", dim=8)
MEMORY_BACKENDS = ["embedded", "chroma-server"]


def entries(count: int, first: int = 0) -> list[NewEntry]:
    vectors = np.random.default_rng(first).normal(size=(count, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [NewEntry(f"label {(first + i) % 7}", "image", f"s{first + i}", v) for i, v in enumerate(vectors)]


def mirrored(store: MemoryStore, name: str, query: np.ndarray) -> None:
    """Search once (starting the mirror's build) and wait until the mirror answers."""
    store.nearest(name, IDENTITY, query, 5)
    deadline = time.monotonic() + 60
    while store.mirrors.nearest(name, IDENTITY, query, 5) is None:
        assert time.monotonic() < deadline, "the mirror was not built"
        time.sleep(0.05)


def answer(store: MemoryStore, query: np.ndarray, n: int = 10) -> list[tuple[str, str]]:
    return [(hit.id, hit.label) for hit in store.nearest("m", IDENTITY, query, n)]


@pytest.fixture
def query() -> np.ndarray:
    return entries(1, first=999)[0].embedding


def test_the_mirror_answers_like_chroma(tmp_path: Path, make_store, query: np.ndarray) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, entries(300))
    from_chroma = answer(store, query)
    mirrored(store, "m", query)
    assert store.mirrors.nearest("m", IDENTITY, query, 10) is not None
    assert answer(store, query) == from_chroma


def test_the_store_s_own_adds_and_removals_reach_its_mirror_at_once(
    tmp_path: Path, make_store, query: np.ndarray
) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, entries(50))
    mirrored(store, "m", query)
    near = NewEntry("close", "image", "near", query)
    added = store.add("m", IDENTITY, [near]).added[0]
    assert store.mirrors.nearest("m", IDENTITY, query, 1)[0].id == added
    store.remove("m", [added])
    assert added not in [hit.id for hit in store.mirrors.nearest("m", IDENTITY, query, 5)]


def two_stores(tmp_path: Path, make_store, memory_backend: str) -> tuple[MemoryStore, MemoryStore]:
    """A reader and a writer of the same memories: two stores of one data folder (embedded), or two
    processes' stores (own data folders) on one Chroma server."""
    if memory_backend == "embedded":
        return make_store(tmp_path), make_store(tmp_path)
    return make_store(tmp_path / "reader"), make_store(tmp_path / "writer")


def test_another_store_s_write_is_seen_at_once(tmp_path: Path, make_store, memory_backend, query) -> None:
    reader, writer = two_stores(tmp_path, make_store, memory_backend)
    reader.add("m", IDENTITY, entries(50))
    mirrored(reader, "m", query)
    added = writer.add("m", IDENTITY, [NewEntry("close", "image", "near", query)]).added[0]
    assert reader.nearest("m", IDENTITY, query, 1)[0].id == added
    writer.remove("m", [added])
    assert added not in [hit.id for hit in reader.nearest("m", IDENTITY, query, 5)]


def test_a_memory_dropped_by_another_store_is_not_answered_from_a_mirror(
    tmp_path: Path, make_store, memory_backend: str, query: np.ndarray
) -> None:
    reader, writer = two_stores(tmp_path, make_store, memory_backend)
    reader.add("m", IDENTITY, entries(20))
    mirrored(reader, "m", query)
    writer.drop("m")
    with pytest.raises(MemoryStoreError, match="does not exist"):
        reader.nearest("m", IDENTITY, query, 5)


def test_a_store_without_the_in_process_index_searches_chroma(tmp_path: Path, query: np.ndarray) -> None:
    store = MemoryStore(tmp_path, mirror=False)
    store.add("m", IDENTITY, entries(20))
    assert len(answer(store, query, 5)) == 5 and store.mirrors.nearest("m", IDENTITY, query, 5) is None


def test_the_server_start_mirrors_every_memory(tools) -> None:
    tools.add_labels("zs", ["a", "b", "c"])
    tools.start_loading()
    tools.label_index.get(timeout=60)
    deadline = time.monotonic() + 60
    while tools.store.mirrors.current("zs") is None:
        assert time.monotonic() < deadline, "the memory was not mirrored"
        time.sleep(0.05)
    assert tools.store.kinds("zs") == {"text"}
