""".rar-memory archives: the documented layout, round trips into an empty data folder and into a
Chroma server with the same retrieval answers, idempotent imports, and bad archives refused with
a clear error before anything is written."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rar_tools.api import RarTools
from rar_tools.cli import main
from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import ArchiveError, EncoderMismatchError
from rar_tools.memory import MemoryStore, NewEntry
from rar_tools.memory.archive import EMBEDDINGS, ENTRIES, MANIFEST
from rar_tools.memory.transfer import export_memory
from rar_tools.settings import Settings

MEMORY_BACKENDS = ["embedded", "chroma-server"]


@pytest.fixture
def source(tmp_path: Path, clip_model: str, image_folder: Path) -> RarTools:
    """An embedded store with a memory 'colours': two exemplars each of red and blue, and label texts."""
    tools = RarTools(Settings(data_dir=tmp_path / "source", clip_model=clip_model, no_ranker=True))
    for colour in ("red", "blue"):
        tools.add_images("colours", [str(image_folder / colour / f"{n}.png") for n in range(2)], colour)
    tools.add_labels("colours", ["red", "blue", "green"], category="colour")
    return tools


@pytest.fixture
def archive(source: RarTools, tmp_path: Path) -> Path:
    path = tmp_path / "colours.rar-memory"
    source.export("colours", str(path))
    source.close()
    return path


def answers(tools: RarTools, image: Path) -> tuple[list[str], list[float]]:
    """Labels and scores of a retrieval (scores compared within float32 noise: a search may be
    Chroma's or the in-process mirror's)."""
    result = tools.retrieve("colours", str(image), k=3)
    return [c.label for c in result.candidates], [c.score for c in result.candidates]


def unchanged(tools: RarTools) -> None:
    """Nothing was written: no memory, no exemplar file."""
    assert tools.store.names() == []
    assert not [p for p in tools.store.images_dir.rglob("*") if p.is_file()]


def rewrite(archive: Path, target: Path, edit: Callable[[str, bytes], bytes | None], extra=()) -> Path:
    """A copy of `archive` with each member passed through `edit` (None leaves it out), plus
    `extra` (ZipInfo, bytes) members."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = edit(info.filename, source.read(info))
            if data is not None:
                out.writestr(info, data)
        for info, data in extra:
            out.writestr(info, data)
    return target


def edit_manifest(change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def edit(name: str, data: bytes) -> bytes:
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        change(manifest)
        return json.dumps(manifest).encode()

    return edit


def test_an_archive_holds_the_documented_members(archive: Path) -> None:
    with zipfile.ZipFile(archive) as opened:
        names = set(opened.namelist())
        manifest = json.loads(opened.read(MANIFEST))
        rows = [json.loads(line) for line in opened.read(ENTRIES).splitlines()]
        embeddings = np.load(opened.open(EMBEDDINGS))
    images = {n for n in names if n.startswith("images/")}
    assert names == {MANIFEST, ENTRIES, EMBEDDINGS} | images and len(images) == 4
    assert (manifest["format"], manifest["format_version"], manifest["memory"]) == ("rar-memory", 1, "colours")
    assert manifest["counts"]["entries"] == len(rows) == 7 and embeddings.shape == (7, manifest["encoder"]["dim"])
    assert set(manifest["members"]) == names - {MANIFEST}
    assert {row["kind"] for row in rows} == {"image", "text"} and all(row.get("added_at") for row in rows)


def test_import_into_an_empty_store_gives_the_same_retrieval_answers(
    archive: Path, tools: RarTools, source: RarTools, image_folder: Path
) -> None:
    query = image_folder / "red" / "2.png"
    source_answers = answers(RarTools(source.settings), query)
    result = tools.import_memory(str(archive))
    assert (result.memory, result.added, result.already_present, result.count) == ("colours", 7, 0, 7)
    labels, scores = answers(tools, query)
    assert labels == source_answers[0] and scores == pytest.approx(source_answers[1], abs=1e-5)
    assert tools.list_memories(memory="colours").memories[0].labels == {"red": 3, "blue": 3, "green": 1}


def test_importing_twice_stores_nothing_new(archive: Path, tools: RarTools) -> None:
    tools.import_memory(str(archive))
    again = tools.import_memory(str(archive))
    assert (again.added, again.already_present, again.count) == (0, 7, 7)


def test_import_under_another_name_derives_its_ids_for_that_name(archive: Path, tools: RarTools) -> None:
    tools.import_memory(str(archive), as_name="copy")
    tools.import_memory(str(archive), as_name="copy")
    assert tools.store.names() == ["copy"] and tools.store.count("copy") == 7


def store_flags(settings: Settings) -> list[str]:
    """The CLI flags that reach the store `settings` describe."""
    flags = ["--data-dir", str(settings.data_dir), "--clip-model", settings.clip_model]
    if settings.chroma_url:
        flags += ["--chroma-url", settings.chroma_url, "--chroma-database", settings.chroma_database]
    return flags


def test_the_export_and_import_commands_round_trip(archive: Path, settings: Settings, capsys) -> None:
    flags = store_flags(settings)
    assert main(["import", str(archive), "--as", "again", *flags]) == 0
    assert "imported 7 new entries into memory 'again'" in capsys.readouterr().out
    out = archive.with_name("again.rar-memory")
    assert main(["export", "again", str(out), "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 7 and out.is_file()


def test_the_import_command_draws_no_progress_bar_when_stderr_is_not_a_terminal(
    archive: Path, settings: Settings, capsys
) -> None:
    flags = store_flags(settings)
    assert main(["import", str(archive), *flags]) == 0
    err = capsys.readouterr().err
    assert "entry/s" not in err and "%|" not in err, err


def test_a_truncated_archive_is_refused(archive: Path, tools: RarTools, tmp_path: Path) -> None:
    cut = tmp_path / "cut.rar-memory"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="not a readable zip file"):
        tools.import_memory(str(cut))
    unchanged(tools)


def test_a_member_that_does_not_match_its_checksum_is_refused(archive: Path, tools: RarTools, tmp_path: Path) -> None:
    def flip_a_byte(name: str, data: bytes) -> bytes:
        return data[:-2] + bytes([data[-2] ^ 1]) + data[-1:] if name == ENTRIES else data

    with pytest.raises(ArchiveError, match="does not match its checksum"):
        tools.import_memory(str(rewrite(archive, tmp_path / "bad.rar-memory", flip_a_byte)))
    unchanged(tools)


@pytest.mark.parametrize(
    ("member", "mode", "message"),
    [
        ("../escape.jpg", stat.S_IFREG, "leaves the archive's folder"),
        ("images/../../escape.jpg", stat.S_IFREG, "leaves the archive's folder"),
        ("/tmp/absolute.jpg", stat.S_IFREG, "is an absolute path"),
        ("images/ab/link.jpg", stat.S_IFLNK, "is a symbolic link"),
        ("notes.txt", stat.S_IFREG, "not part of the rar-memory format"),
    ],
)
def test_members_outside_the_format_are_refused(
    archive: Path, tools: RarTools, tmp_path: Path, member: str, mode: int, message: str
) -> None:
    info = zipfile.ZipInfo(member)
    info.external_attr = (mode | 0o777) << 16
    bad = rewrite(archive, tmp_path / "bad.rar-memory", lambda _, data: data, [(info, b"/etc/passwd")])
    with pytest.raises(ArchiveError, match=message):
        tools.import_memory(str(bad))
    unchanged(tools)
    assert not (tmp_path / "escape.jpg").exists() and not Path("/tmp/absolute.jpg").exists()


def test_a_manifest_nested_too_deeply_is_refused(archive: Path, tools: RarTools, tmp_path: Path) -> None:
    def deepen(name: str, data: bytes) -> bytes:
        return b"[" * 5_000 + b"]" * 5_000 if name == MANIFEST else data

    with pytest.raises(ArchiveError, match="manifest.json is not valid JSON \\(JSON nested too deeply"):
        tools.import_memory(str(rewrite(archive, tmp_path / "deep.rar-memory", deepen)))
    unchanged(tools)


def test_an_archive_of_a_newer_format_version_is_refused(archive: Path, tools: RarTools, tmp_path: Path) -> None:
    newer = rewrite(archive, tmp_path / "new.rar-memory", edit_manifest(lambda m: m.update(format_version=2)))
    with pytest.raises(ArchiveError, match="written by a newer rar-tools \\(format version 2\\)"):
        tools.import_memory(str(newer))
    unchanged(tools)


def test_an_archive_of_another_encoder_than_the_memory_s_is_refused(archive: Path, tools: RarTools, tmp_path) -> None:
    other = rewrite(
        archive, tmp_path / "other.rar-memory", edit_manifest(lambda m: m["encoder"].update(model="ViT-L-14"))
    )
    tools.import_memory(str(archive))
    with pytest.raises(EncoderMismatchError, match="rar-tools reembed"):
        tools.import_memory(str(other))
    assert tools.store.count("colours") == 7


def test_two_gigabytes_of_zeros_are_refused_at_once(tools: RarTools, tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.rar-memory"
    with zeros.open("wb") as handle:
        handle.truncate(2 * 2**30)  # sparse: no disk used
    with pytest.raises(ArchiveError, match="not a readable zip file"):
        tools.import_memory(str(zeros))
    unchanged(tools)


def test_a_member_larger_than_its_manifest_says_is_refused_unread(
    archive: Path, tools: RarTools, tmp_path: Path
) -> None:
    def inflate(name: str, data: bytes) -> bytes:
        return data + bytes(64 * 2**20) if name == EMBEDDINGS else data  # 64 MiB of zeros, deflated

    bomb = tmp_path / "bomb.rar-memory"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, inflate(info.filename, source.read(info)))
    assert bomb.stat().st_size < 2 * 2**20
    with pytest.raises(ArchiveError, match="embeddings.npy' holds .* bytes, the manifest says"):
        tools.import_memory(str(bomb))
    unchanged(tools)


# An import as `rar-tools import` runs it, reporting every stored chunk on stdout.
IMPORT = """
import sys
from rar_tools.api import RarTools
from rar_tools.settings import Settings

data_dir, archive = sys.argv[1:]
tools = RarTools(Settings(data_dir=data_dir, clip_model="unused", no_ranker=True))
tools.import_memory(archive, progress=lambda done, total: print(done, flush=True))
"""


def big_archive(tmp_path: Path, entries: int) -> Path:
    """An archive of `entries` label-text entries over 50 labels (random unit embeddings)."""
    vectors = np.random.default_rng(0).normal(size=(entries, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [NewEntry(f"label {i % 50}", "text", f"t{i}", v) for i, v in enumerate(vectors)]
    store = MemoryStore(tmp_path / "big-source")
    store.add("big", EncoderIdentity("test", "none", 32), rows)
    export_memory(store, "big", tmp_path / "big.rar-memory")
    store.close()
    return tmp_path / "big.rar-memory"


def test_an_import_killed_part_way_is_completed_by_running_it_again(tmp_path: Path) -> None:
    total = 3 * 4096 + 100
    archive, data_dir = big_archive(tmp_path, total), tmp_path / "target"
    process = subprocess.Popen(
        [sys.executable, "-c", IMPORT, str(data_dir), str(archive)], stdout=subprocess.PIPE, text=True
    )
    first = int(process.stdout.readline())  # one chunk stored
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()

    store = MemoryStore(data_dir, lock_wait_s=10)
    stored = store.count("big")
    assert first <= stored < total, "the kill came after the import had finished"
    tools = RarTools(Settings(data_dir=data_dir, no_ranker=True), store=store)
    again = tools.import_memory(str(archive))
    assert (again.added + again.already_present, again.count) == (total, total)
    assert again.already_present >= first
    assert sum(tools.list_memories(memory="big", max_labels=100).memories[0].labels.values()) == total
