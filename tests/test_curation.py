"""Tidying a memory: near-identical exemplars, likely mislabelled ones, and relabelling entries,
through the API, the CLI and the MCP tools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mcp import Client

from rar_tools.api import RarTools
from rar_tools.cli import main
from rar_tools.encoder import EncoderIdentity
from rar_tools.memory import NewEntry, entry_id
from rar_tools.server import create_server

IDENTITY = EncoderIdentity(model="test", pretrained="none", dim=4)
MEMORY_BACKENDS = ["embedded", "chroma-server"]


def exemplar(label: str, sha: str, *values: float) -> NewEntry:
    v = np.asarray(values, np.float32)
    return NewEntry(label=label, kind="image", sha256=sha, embedding=v / np.linalg.norm(v))


@pytest.fixture
def tidy(tools: RarTools) -> RarTools:
    """Memory 'birds': two near-identical jays, a wren almost on top of them, a crow apart, and a
    label text of the jay that is ignored (only exemplar images are compared)."""
    tools.store.add(
        "birds",
        IDENTITY,
        [
            exemplar("jay", "j1", 1, 0, 0, 0),
            exemplar("jay", "j2", 1, 0.02, 0, 0),
            exemplar("wren", "w1", 1, 0, 0.05, 0),
            exemplar("crow", "c1", 0, 1, 0, 0),
        ],
    )
    tools.store.add("birds", IDENTITY, [NewEntry("jay", "text", "t1", np.asarray([1, 0, 0, 0], np.float32))])
    return tools


def ids(*pairs: tuple[str, str]) -> list[str]:
    return [entry_id("birds", "image", sha, label) for label, sha in pairs]


def test_near_identical_exemplars_are_paired_within_and_across_labels(tidy: RarTools) -> None:
    result = tidy.find_duplicates("birds", threshold=0.99)
    found = {(p.first_label, p.second_label, p.same_label) for p in result.pairs}
    assert result.scanned == 4 and not result.truncated
    assert {(a, b) for a, b, _ in found} | {(b, a) for a, b, _ in found} >= {("jay", "jay"), ("jay", "wren")}
    assert len(result.pairs) == 3 and all(p.similarity >= 0.99 for p in result.pairs)
    assert [p.similarity for p in result.pairs] == sorted((p.similarity for p in result.pairs), reverse=True)


def test_duplicates_beyond_max_results_are_flagged_as_truncated(tidy: RarTools) -> None:
    result = tidy.find_duplicates("birds", threshold=0.99, max_results=1)
    assert len(result.pairs) == 1 and result.truncated


def test_an_exemplar_among_another_label_s_exemplars_is_suggested_that_label(tidy: RarTools) -> None:
    result = tidy.find_conflicts("birds", neighbours=2)
    assert [(c.entry_id, c.label, c.suggested_label, c.share) for c in result.conflicts] == [
        (ids(("wren", "w1"))[0], "wren", "jay", 1.0)
    ]


def test_relabelling_moves_entries_to_ids_derived_for_the_new_label(tidy: RarTools) -> None:
    moved = tidy.relabel("birds", "jay", entry_ids=ids(("wren", "w1")))
    assert (moved.moved, moved.entry_ids, moved.count) == (1, ids(("jay", "w1")), 5)
    assert tidy.list_memories(memory="birds").memories[0].labels == {"jay": 4, "crow": 1}
    assert tidy.find_conflicts("birds", neighbours=2).conflicts == []


def test_relabelling_again_changes_nothing(tidy: RarTools) -> None:
    tidy.relabel("birds", "jay", entry_ids=ids(("wren", "w1")))
    again = tidy.relabel("birds", "jay", entry_ids=ids(("wren", "w1")), label="wren")
    assert (again.moved, again.not_found, again.count) == (0, ids(("wren", "w1")), 5)


def test_relabelling_a_label_moves_its_image_and_text_entries(tidy: RarTools) -> None:
    result = tidy.relabel("birds", "blue jay", label="jay", category="corvid")
    assert result.moved == 3 and tidy.store.kinds("birds") == {"image", "text"}
    entries = tidy.store.entries("birds", result.entry_ids).values()
    assert {(e.label, e.kind, e.category) for e in entries} == {
        ("blue jay", "image", "corvid"),
        ("blue jay", "text", "corvid"),
    }


def test_relabelled_exemplars_keep_their_files(tools: RarTools, image_folder: Path) -> None:
    added = tools.add_images("colours", [str(image_folder / "red" / "0.png")], "rose")
    moved = tools.relabel("colours", "red", label="rose")
    (entry,) = tools.store.entries("colours", moved.entry_ids).values()
    assert entry.image_path.is_file() and entry.id != added.entry_ids[0]


def test_the_tidying_commands_print_their_findings(tidy: RarTools, capsys: pytest.CaptureFixture) -> None:
    flags = ["--data-dir", str(tidy.settings.data_dir), "--clip-model", tidy.settings.clip_model]
    if tidy.settings.chroma_url:
        flags += ["--chroma-url", tidy.settings.chroma_url, "--chroma-database", tidy.settings.chroma_database]
    tidy.close()
    assert main(["duplicates", "birds", "--threshold", "0.99", *flags]) == 0
    assert "3 pair(s) at cosine >= 0.99 among 4 exemplars" in capsys.readouterr().out
    assert main(["conflicts", "birds", "--neighbours", "2", *flags]) == 0
    assert "'wren': 100% of its neighbours are 'jay'" in capsys.readouterr().out
    assert main(["relabel", "birds", "--to", "jay", "--label", "wren", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["moved"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_agent_finds_a_likely_mislabel_and_relabels_it(tidy: RarTools) -> None:
    async with Client(create_server(tidy)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        found = await client.call_tool("find_conflicts", {"memory": "birds", "neighbours": 2})
        conflict = found.structured_content["conflicts"][0]
        moved = await client.call_tool(
            "relabel_entries",
            {"memory": "birds", "to_label": conflict["suggested_label"], "entry_ids": [conflict["entry_id"]]},
        )
    assert tools["find_conflicts"].annotations.read_only_hint and tools["find_duplicates"].annotations.read_only_hint
    assert (
        tools["relabel_entries"].annotations.destructive_hint and tools["relabel_entries"].annotations.idempotent_hint
    )
    assert moved.structured_content["moved"] == 1 and not moved.is_error


def test_a_relabel_killed_between_its_two_steps_is_finished_by_running_it_again(tidy: RarTools) -> None:
    tidy.store.add("birds", IDENTITY, [exemplar("jay", "w1", 1, 0, 0.05, 0)])  # moved, but the old entry is left
    result = tidy.relabel("birds", "jay", label="wren")
    assert (result.moved, result.count) == (1, 5)
    assert tidy.list_memories(memory="birds").memories[0].labels == {"jay": 4, "crow": 1}
