"""The memory store: names, idempotent adds, exemplar files, removal, persistence, encoder checks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import EncoderMismatchError, ImageInputError, MemoryStoreError
from rar_tools.memory import KINDS_KEY, Entry, ExemplarImage, MemoryStore, NewEntry, check_memory_name, entry_id

IDENTITY = EncoderIdentity(model="test", pretrained="none", dim=4)


# Every test here that touches a store runs on the embedded store and on a real Chroma server.
MEMORY_BACKENDS = ["embedded", "chroma-server"]


def vector(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def text_entry(label: str, embedding: np.ndarray) -> NewEntry:
    return NewEntry(label=label, kind="text", sha256=label, embedding=embedding)


def exemplar(seed: int, embedding: np.ndarray) -> ExemplarImage:
    """A small noisy picture, named by the sha256 of its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return ExemplarImage(
        Image.fromarray(pixels), hashlib.sha256(pixels.tobytes()).hexdigest(), f"/p/{seed}.png", embedding
    )


@pytest.mark.parametrize("name", ["birds", "a", "cub-200_v2.1", "x" * 64])
def test_valid_memory_names_are_accepted(name: str) -> None:
    assert check_memory_name(name) == name


@pytest.mark.parametrize("name", ["", "-birds", "birds.", "a..b", "with space", "x" * 65, "ümlaut", "a/b"])
def test_invalid_memory_names_get_our_own_message(name: str) -> None:
    with pytest.raises(MemoryStoreError, match="memory name .* is invalid"):
        check_memory_name(name)


def test_add_images_stores_entries_with_their_exemplar_files(tools: RarTools, image_folder: Path) -> None:
    result = tools.add_images("birds", [str(p) for p in sorted((image_folder / "red").iterdir())], "cardinal")
    assert (result.added, result.already_present, result.count) == (3, 0, 3)
    for entry in tools.store.entries("birds", result.entry_ids).values():
        assert entry.image_path is not None and entry.image_path.is_file()
        assert entry.image_path.is_relative_to(tools.store.data_dir)
        assert entry.label == "cardinal" and entry.kind == "image" and len(entry.sha256) == 64
        assert entry.source.startswith(str(image_folder)) and entry.added_at


def test_re_adding_the_same_image_and_label_stores_nothing(tools: RarTools, image_folder: Path) -> None:
    image = str(image_folder / "red" / "0.png")
    first = tools.add_images("birds", [image], "cardinal")
    again = tools.add_images("birds", [image, image], "cardinal")
    assert (again.added, again.already_present, again.count) == (0, 1, 1)
    assert again.entry_ids == first.entry_ids
    assert "already present" in again.message


def test_same_image_with_another_label_is_a_new_entry(tools: RarTools, image_folder: Path) -> None:
    image = str(image_folder / "red" / "0.png")
    tools.add_images("birds", [image], "cardinal")
    assert tools.add_images("birds", [image], "tanager").added == 1


def test_one_bad_image_stores_nothing(tools: RarTools, image_folder: Path) -> None:
    good = str(image_folder / "red" / "0.png")
    with pytest.raises(ImageInputError, match="does not exist"):
        tools.add_images("birds", [good, str(image_folder / "missing.png")], "cardinal")
    assert "birds" not in tools.store.names()
    assert not (tools.store.images_dir).exists() or not list(tools.store.images_dir.rglob("*.jpg"))


def test_skip_unreadable_reports_what_was_skipped(tools: RarTools, image_folder: Path) -> None:
    bad = image_folder / "red" / "broken.png"
    bad.write_bytes(b"not an image")
    result = tools.add_images(
        "birds", [str(image_folder / "red" / "0.png"), str(bad)], "cardinal", skip_unreadable=True
    )
    assert result.added == 1 and [s.source for s in result.skipped] == [str(bad)]


def test_label_texts_are_stored_with_hierarchy(tools: RarTools) -> None:
    result = tools.add_labels("zs", ["Herring Gull", "Blue Jay"], hierarchy=[("gull", "seabird"), ("jay", None)])
    entries = tools.store.entries("zs", result.entry_ids)
    assert {e.label: (e.category, e.parent) for e in entries.values()} == {
        "Herring Gull": ("gull", "seabird"),
        "Blue Jay": ("jay", None),
    }
    assert all(e.kind == "text" and e.image_path is None for e in entries.values())


@pytest.mark.parametrize(
    "label, expected",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 201, "limit is 200"),
        ("bad\x00label", "control characters"),
        ("\u200b\u2060\ufeff", "no visible character"),
        ("\u3164 \u200d", "no visible character"),
        ("\u0301", "no visible character"),
    ],
    ids=["empty", "blank", "too-long", "control", "zero-width", "filler", "lone-accent"],
)
def test_bad_labels_are_refused(tools: RarTools, label: str, expected: str) -> None:
    with pytest.raises(MemoryStoreError, match=expected):
        tools.add_labels("zs", [label])


def test_label_whitespace_is_normalised(tools: RarTools) -> None:
    result = tools.add_labels("zs", ["  Blue \t Jay "])
    assert [e.label for e in tools.store.entries("zs", result.entry_ids).values()] == ["Blue Jay"]


def test_a_label_typed_composed_or_decomposed_is_one_label(tools: RarTools, image_folder: Path) -> None:
    image = str(image_folder / "red" / "0.png")
    composed = tools.add_images("m", [image], "caf\u00e9 bird")
    decomposed = tools.add_images("m", [image], "cafe\u0301 bird")
    assert (decomposed.added, decomposed.already_present) == (0, 1)
    assert decomposed.entry_ids == composed.entry_ids
    assert tools.list_memories().memories[0].labels == {"caf\u00e9 bird": 1}
    assert tools.remove("m", label="cafe\u0301 bird").removed == 1


def test_removal_by_label_deletes_unused_exemplar_files(tools: RarTools, image_folder: Path) -> None:
    red, blue = str(image_folder / "red" / "0.png"), str(image_folder / "blue" / "0.png")
    tools.add_images("birds", [red, blue], "cardinal")
    kept = tools.add_images("other", [red], "red bird")
    files = sorted(tools.store.images_dir.rglob("*.jpg"))
    assert len(files) == 2
    result = tools.remove("birds", label="cardinal")
    assert (result.removed, result.count) == (2, 0)
    # the red copy is still used by the other memory; the blue one is gone
    left = sorted(tools.store.images_dir.rglob("*.jpg"))
    entry = next(iter(tools.store.entries("other", kept.entry_ids).values()))
    assert left == [entry.image_path]


def test_removal_by_entry_id(tools: RarTools, image_folder: Path) -> None:
    added = tools.add_images("birds", [str(p) for p in (image_folder / "green").iterdir()], "parrot")
    result = tools.remove("birds", entry_ids=added.entry_ids[:2])
    assert (result.removed, result.count) == (2, 1)


def test_an_entry_id_given_twice_is_removed_once(tools: RarTools) -> None:
    added = tools.add_labels("zs", ["a", "b"])
    result = tools.remove("zs", entry_ids=[added.entry_ids[0]] * 2)
    assert (result.removed, result.count) == (1, 1)


def test_removal_needs_a_target(tools: RarTools) -> None:
    tools.add_labels("zs", ["a"])
    with pytest.raises(MemoryStoreError, match="say what to remove"):
        tools.remove("zs")


def test_unknown_memory_is_named_in_the_error(tools: RarTools) -> None:
    tools.add_labels("zs", ["a"])
    with pytest.raises(MemoryStoreError, match="memory 'nope' does not exist \\(memories: zs\\)"):
        tools.remove("nope", label="a")


def test_entries_persist_across_store_instances(tmp_path: Path, make_store) -> None:
    make_store(tmp_path).add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0))])
    reopened = make_store(tmp_path)
    assert reopened.names() == ["m"] and reopened.count("m") == 1


def test_the_kinds_a_memory_holds_are_recorded_by_adds(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [NewEntry("a", "image", "s1", vector(1, 0, 0, 0))])
    assert store.kinds("m") == {"image"}
    store.add("m", IDENTITY, [text_entry("b", vector(0, 1, 0, 0))])
    assert make_store(tmp_path).kinds("m") == {"image", "text"}
    assert store.index.get("m").metadata[KINDS_KEY] == "image,text"


def test_removing_the_last_entry_of_a_kind_updates_the_record(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [NewEntry("a", "image", "s1", vector(1, 0, 0, 0)), text_entry("b", vector(0, 1, 0, 0))])
    store.remove("m", label="b")
    assert store.kinds("m") == {"image"}


def test_a_memory_without_a_kinds_record_is_scanned_once(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0))])
    collection = store.index.get("m")
    collection.modify(metadata={k: v for k, v in collection.metadata.items() if k != KINDS_KEY})
    assert store.kinds("m") == {"text"}
    assert store.index.get("m").metadata[KINDS_KEY] == "text"


def test_nearest_reads_labels_of_entries_another_store_added(tmp_path: Path, make_store) -> None:
    writer, reader = make_store(tmp_path), make_store(tmp_path)
    writer.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0)), text_entry("b", vector(0, 1, 0, 0))])
    hits = reader.nearest("m", IDENTITY, vector(1, 0.1, 0, 0), 5)
    assert [(h.label, h.kind) for h in hits] == [("a", "text"), ("b", "text")]
    assert hits[0].similarity > hits[1].similarity


def test_read_labels_reads_every_entry_label_and_kind(tmp_path: Path, make_store) -> None:
    make_store(tmp_path).add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0)), text_entry("b", vector(0, 1, 0, 0))])
    fresh = make_store(tmp_path)
    assert fresh.read_labels("m") == 2
    assert sorted(fresh.entry_labels.values()) == [("a", "text"), ("b", "text")]


def test_new_memories_take_the_store_hnsw_settings(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path, hnsw={"max_neighbors": 48})
    store.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0))])
    hnsw = store.index.get("m").configuration_json["hnsw"]
    assert (hnsw["max_neighbors"], hnsw["space"]) == (48, "cosine")


def test_the_server_start_reads_memory_labels_in_the_background(tools: RarTools) -> None:
    tools.add_labels("zs", ["a", "b", "c"])
    tools.store.entry_labels.clear()
    tools.start_loading()
    assert tools.label_index.get(timeout=60) == 3 and len(tools.store.entry_labels) == 3


def test_a_different_encoder_is_refused(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0))])
    other = EncoderIdentity(model="other", pretrained="none", dim=4)
    with pytest.raises(EncoderMismatchError, match="was filled by CLIP test"):
        store.add("m", other, [text_entry("b", vector(0, 1, 0, 0))])
    with pytest.raises(EncoderMismatchError):
        store.nearest_excluding("m", other, vector(1, 0, 0, 0), "text", 5)
    with pytest.raises(EncoderMismatchError):
        store.nearest("m", other, vector(1, 0, 0, 0), 5)


def test_large_adds_go_in_chunks_within_the_batch_limit(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.index.max_batch = 7
    rng = np.random.default_rng(0)
    entries = [text_entry(f"label {i}", rng.normal(size=4).astype(np.float32)) for i in range(30)]
    outcome = store.add("m", IDENTITY, entries)
    assert len(outcome.added) == 30 and store.count("m") == 30


def test_summary_counts_labels_and_kinds(tools: RarTools, image_folder: Path) -> None:
    tools.add_images("mix", [str(p) for p in (image_folder / "red").iterdir()], "cardinal")
    tools.add_labels("mix", ["cardinal", "jay"])
    listing = tools.list_memories(max_labels=1)
    info = listing.memories[0]
    assert (info.name, info.count, info.kinds) == ("mix", 5, {"image": 3, "text": 2})
    assert info.labels == {"cardinal": 4} and info.labels_total == 2 and info.labels_truncated
    assert info.encoder is not None and info.encoder.dim == 32


def test_unreachable_chroma_server_is_a_clear_error() -> None:
    from rar_tools.memory import open_http_client

    with pytest.raises(MemoryStoreError, match="cannot reach the Chroma server at http://127.0.0.1:9"):
        open_http_client("http://127.0.0.1:9")


def test_chroma_url_must_be_http() -> None:
    from rar_tools.memory import open_http_client

    with pytest.raises(MemoryStoreError, match="is not an http"):
        open_http_client("ftp://example")


# -- the store owns entries and exemplar files together -------------------------------------------
def test_add_images_writes_each_exemplar_file_with_its_entry(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    images = [exemplar(0, vector(1, 0, 0, 0)), exemplar(1, vector(0, 1, 0, 0))]
    outcome = store.add_images("m", IDENTITY, images, "cardinal", category="bird", max_side=16)
    assert outcome.added == [entry_id("m", "image", i.sha256, "cardinal") for i in images]
    entries = store.entries("m", outcome.added)
    for image in images:
        entry = entries[entry_id("m", "image", image.sha256, "cardinal")]
        assert (entry.kind, entry.label, entry.category, entry.source) == ("image", "cardinal", "bird", image.source)
        assert entry.image_path == store.images_dir / image.sha256[:2] / f"{image.sha256}.jpg"
        with Image.open(entry.image_path) as copy:
            assert max(copy.size) == 16  # bounded by max_side
    again = store.add_images("m", IDENTITY, images, "cardinal")
    assert (again.added, again.already_present) == ([], outcome.added)
    assert len(list(store.images_dir.rglob("*.jpg"))) == 2


def test_a_removal_waits_while_an_exemplar_file_is_between_its_write_and_its_entry(
    tmp_path: Path, make_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after add_images writes a file that a removal would find unused, the removal runs in
    another thread: it must wait for the entry, or it deletes the file the entry points at."""
    store = make_store(tmp_path)
    image = exemplar(0, vector(1, 0, 0, 0))
    store.add_images("m", IDENTITY, [image], "passing")
    removal = threading.Thread(target=store.remove, args=("m",), kwargs={"label": "passing"})
    write = store.files.write

    def write_then_remove(picture: ExemplarImage, max_side: int) -> str:
        written = write(picture, max_side)
        removal.start()
        removal.join(timeout=1.0)  # with the write lock held, the removal cannot finish now
        return written

    monkeypatch.setattr(store.files, "write", write_then_remove)
    kept = store.add_images("m", IDENTITY, [image], "kept").added[0]
    removal.join(timeout=30)
    assert not removal.is_alive()
    assert list(store.entries("m", [kept])) == [kept] and store.count("m") == 1
    assert store.exemplar_path("m", kept).is_file()


def test_add_images_with_another_encoder_writes_no_file(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0))])
    other = EncoderIdentity(model="other", pretrained="none", dim=4)
    with pytest.raises(EncoderMismatchError):
        store.add_images("m", other, [exemplar(0, vector(1, 0, 0, 0))], "cardinal")
    assert not store.images_dir.exists() or not list(store.images_dir.rglob("*"))


def test_entries_are_typed_with_an_image_path_only_for_images(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    image = store.add_images("m", IDENTITY, [exemplar(0, vector(1, 0, 0, 0))], "red").added[0]
    text = store.add("m", IDENTITY, [text_entry("blue", vector(0, 1, 0, 0))]).added[0]
    entries = store.entries("m", [image, text, "no-such-entry"])
    assert set(entries) == {image, text} and all(isinstance(e, Entry) for e in entries.values())
    assert entries[image].image_path is not None and entries[image].image_path.is_file()
    assert entries[image].image_path.is_absolute() and entries[image].kind == "image"
    assert entries[text].image_path is None and (entries[text].label, entries[text].kind) == ("blue", "text")
    assert store.exemplar_path("m", image) == entries[image].image_path
    with pytest.raises(MemoryStoreError, match=f"entry '{text}' of memory 'm' is a label text, not an image"):
        store.exemplar_path("m", text)
    with pytest.raises(MemoryStoreError, match="memory 'm' has no entry 'nope'"):
        store.exemplar_path("m", "nope")


def test_levels_and_kinds_are_read_by_id(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    entry = NewEntry("gull", "text", "g", vector(1, 0, 0, 0), category="larus", parent="seabird")
    added = store.add("m", IDENTITY, [entry, text_entry("plain", vector(0, 1, 0, 0))]).added
    assert store.levels("m", [*added, "missing"]) == {added[0]: ("larus", "seabird"), added[1]: (None, None)}
    assert store.kinds("m") == {"text"}


def test_require_refuses_an_unknown_memory_naming_the_others(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0))])
    store.require("m")
    assert store.exists("m") and not store.exists("n")
    with pytest.raises(MemoryStoreError, match=r"memory 'n' does not exist \(memories: m\)"):
        store.require("n")
    with pytest.raises(MemoryStoreError, match="memory 'n' does not exist"):
        store.nearest("n", IDENTITY, vector(1, 0, 0, 0), 5)


def test_generation_moves_on_when_entries_are_removed_or_the_memory_is_dropped(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    store.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0)), text_entry("b", vector(0, 1, 0, 0))])
    start = store.generation("m")
    store.add("m", IDENTITY, [text_entry("c", vector(0, 0, 1, 0))])
    assert store.generation("m") == start  # adds keep what was learned
    store.remove("m", label="a")
    removed = store.generation("m")
    assert removed > start
    store.drop("m")
    assert store.generation("m") > removed


def test_drop_deletes_the_exemplar_files_no_other_memory_uses(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    shared, own = exemplar(0, vector(1, 0, 0, 0)), exemplar(1, vector(0, 1, 0, 0))
    store.add_images("m", IDENTITY, [shared, own], "x")
    kept = store.add_images("other", IDENTITY, [shared], "y").added[0]
    assert store.drop("m") == 2 and store.names() == ["other"]
    assert sorted(store.images_dir.rglob("*.jpg")) == [store.exemplar_path("other", kept)]


def test_importing_the_memory_package_imports_no_chromadb_nor_torch() -> None:
    code = (
        "import sys, rar_tools.memory, rar_tools.retrieval\n"
        "print(sorted(m for m in ('chromadb', 'torch', 'open_clip') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts this process's descriptors in /proc")
def test_a_closed_store_leaves_no_descriptor_open(tmp_path: Path, make_store) -> None:
    """Its index files, or its connections to a Chroma server, are all released: a process that opens
    and closes stores (the Python API, a notebook, an evaluation per run) does not run out of files."""

    def open_use_and_close(n: int) -> None:
        store = make_store(tmp_path / f"data-{n}")
        store.add("m", IDENTITY, [text_entry("a", vector(1, 0, 0, 0))])
        assert store.close()

    open_use_and_close(0)  # the first opening starts what stays for the process (threads, caches)
    before = len(list(Path("/proc/self/fd").iterdir()))
    for n in range(1, 11):
        open_use_and_close(n)
    assert len(list(Path("/proc/self/fd").iterdir())) <= before + 2
