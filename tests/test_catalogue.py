"""The catalogue: per-label counts kept at write time, forgotten with their memory, and rebuilt
when missing or when they do not add up (writers racing: tests/test_shared_server_writers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rar_tools.encoder import EncoderIdentity
from rar_tools.memory import NewEntry

IDENTITY = EncoderIdentity(model="test", pretrained="none", dim=4)
MEMORY_BACKENDS = ["embedded", "chroma-server"]


def entry(label: str, kind: str, seed: int) -> NewEntry:
    v = np.random.default_rng(seed).normal(size=4).astype(np.float32)
    return NewEntry(label=label, kind=kind, sha256=f"{kind}-{label}-{seed}", embedding=v / np.linalg.norm(v))


def test_counts_per_label_and_kind_follow_adds_and_removals(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [entry("jay", "image", 1), entry("jay", "image", 2), entry("wren", "image", 3)])
    store.add("m", IDENTITY, [entry("jay", "text", 4)])
    assert store.catalogue.counts("m") == {("jay", "image"): 2, ("wren", "image"): 1, ("jay", "text"): 1}
    store.remove("m", label="wren")
    assert store.catalogue.counts("m") == {("jay", "image"): 2, ("jay", "text"): 1}
    summary = make_store(tmp_path).summary("m")
    assert (summary.count, summary.label_counts, summary.kind_counts) == (3, {"jay": 3}, {"image": 2, "text": 1})


def test_dropping_a_memory_forgets_its_counts(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [entry("jay", "image", 1)])
    store.drop("m")
    assert store.catalogue.counts("m") is None


def test_counts_that_do_not_add_up_are_rebuilt_from_the_entries(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [entry("jay", "image", 1), entry("wren", "image", 2)])
    store.catalogue.rebuild("m", [{"label": "jay", "kind": "image"}])  # as if a writer died before counting
    assert store.summary("m").label_counts == {"jay": 1, "wren": 1}
    assert store.catalogue.counts("m") == {("jay", "image"): 1, ("wren", "image"): 1}


def test_a_memory_without_a_catalogue_is_counted_once(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [entry("jay", "image", 1), entry("jay", "text", 2)])
    store.catalogue.forget("m")  # as a memory written before the catalogue existed
    assert store.summary("m").label_counts == {"jay": 2}
    assert store.catalogue.counts("m") == {("jay", "image"): 1, ("jay", "text"): 1}


def test_deltas_are_folded_into_the_snapshot_without_changing_the_counts(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    for seed in range(5):
        store.add("m", IDENTITY, [entry("jay" if seed % 2 else "wren", "image", seed)])
    before = store.catalogue.counts("m")
    store.catalogue.compact("m", at_least=1)
    _, snapshot, deltas = store.catalogue._read("m")
    assert deltas == {} and snapshot == before == {("jay", "image"): 2, ("wren", "image"): 3}


def test_a_write_that_fails_part_way_has_the_counts_checked_at_the_next_listing(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [entry("jay", "image", 1)])
    assert store.summary("m").label_counts == {"jay": 1}
    store.catalogue.note("m", {("ghost", "image"): 1})  # a delta whose entries never made it
    with pytest.raises(RuntimeError), store.writing("m"):
        raise RuntimeError("the write failed part-way")
    assert store.summary("m").label_counts == {"jay": 1}


def test_another_writer_s_write_has_the_counts_checked_at_the_next_listing(
    tmp_path: Path, make_store, memory_backend: str
) -> None:
    # another store of the same embedded folder, or another process's store on the same server
    reader = make_store(tmp_path)
    writer = make_store(tmp_path if memory_backend == "embedded" else tmp_path / "other")
    reader.add("m", IDENTITY, [entry("jay", "image", 1)])
    assert reader.summary("m").label_counts == {"jay": 1}
    writer.catalogue.note("m", {("ghost", "image"): 1})  # the other writer died after its delta...
    writer.mirrors.wrote("m")  # ...and its mark, before its entries
    assert reader.summary("m").label_counts == {"jay": 1}
