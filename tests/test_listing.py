"""Listing memories from the catalogue's counts, a page of labels at a time, on every surface."""

from __future__ import annotations

import base64
import json

import pytest
from mcp import Client

from rar_tools.api import RarTools
from rar_tools.cli import main
from rar_tools.errors import MemoryStoreError
from rar_tools.limits import DEFAULT_LIST_LABELS
from rar_tools.memory.pages import encode_cursor, label_page
from rar_tools.server import create_server

COUNTS = {"jay": 3, "wren": 1, "crow": 3, "owl": 2, "tern": 1}
ORDER = ["crow", "jay", "owl", "tern", "wren"]  # most entries first, then by name


def test_label_pages_follow_each_other_to_the_last_label() -> None:
    seen, cursor = [], None
    while True:
        page, cursor = label_page(COUNTS, 2, cursor)
        seen += list(page)
        if cursor is None:
            break
    assert seen == ORDER


def test_a_page_that_reaches_the_last_label_has_no_cursor() -> None:
    assert label_page(COUNTS, 5) == (dict((label, COUNTS[label]) for label in ORDER), None)


def test_a_cursor_not_made_by_a_listing_is_refused() -> None:
    with pytest.raises(MemoryStoreError, match="not a cursor a label listing gave"):
        label_page(COUNTS, 2, "bm90LWEtY3Vyc29y")


def test_a_cursor_of_json_nested_too_deeply_is_refused_as_not_a_cursor() -> None:
    deep = base64.urlsafe_b64encode(b"[" * 5_000).decode()
    with pytest.raises(MemoryStoreError, match="not a cursor a label listing gave"):
        label_page(COUNTS, 2, deep)


def test_a_cursor_never_contains_a_slash() -> None:
    assert "/" not in encode_cursor("a/b?c" * 20, 10**6)


def test_list_memories_pages_one_memory_s_labels(tools: RarTools) -> None:
    tools.add_labels("zs", ["a", "b", "c"])
    first = tools.list_memories(max_labels=2, memory="zs").memories[0]
    rest = tools.list_memories(max_labels=2, memory="zs", cursor=first.next_cursor).memories[0]
    assert list(first.labels) == ["a", "b"] and first.labels_truncated
    assert (list(rest.labels), rest.next_cursor, rest.labels_total) == (["c"], None, 3)


def test_a_cursor_without_a_memory_is_refused(tools: RarTools) -> None:
    with pytest.raises(MemoryStoreError, match="give `memory` too"):
        tools.list_memories(cursor="abc")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_memory_resource_pages_its_labels(tools: RarTools) -> None:
    labels = [f"label {i:03d}" for i in range(DEFAULT_LIST_LABELS + 5)]
    tools.add_labels("many", labels)
    async with Client(create_server(tools)) as client:
        first = json.loads((await client.read_resource("memory://many")).contents[0].text)
        rest = json.loads((await client.read_resource(f"memory://many/labels/{first['next_cursor']}")).contents[0].text)
    assert len(first["labels"]) == DEFAULT_LIST_LABELS and rest["next_cursor"] is None
    assert list(first["labels"]) + list(rest["labels"]) == labels


def test_the_memories_command_prints_the_next_page_command(settings, capsys: pytest.CaptureFixture) -> None:
    RarTools(settings).add_labels("zs", ["a", "b"])
    flags = ["--data-dir", str(settings.data_dir), "--clip-model", settings.clip_model]
    assert main(["memories", "--memory", "zs", "--max-labels", "1", *flags]) == 0
    cursor = capsys.readouterr().out.split("--cursor ")[1].strip()
    assert main(["memories", "--memory", "zs", "--cursor", cursor, "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["memories"][0]["labels"] == {"b": 1}


def test_a_later_page_counts_the_labels_after_it(settings, capsys: pytest.CaptureFixture) -> None:
    RarTools(settings).add_labels("zs", ["a", "b", "c", "d"])
    flags = ["--data-dir", str(settings.data_dir), "--clip-model", settings.clip_model]
    assert main(["memories", "--memory", "zs", "--max-labels", "1", *flags]) == 0
    first = capsys.readouterr().out
    assert "... 3 more label(s)" in first
    cursor = first.split("--cursor ")[1].strip()
    assert main(["memories", "--memory", "zs", "--max-labels", "1", "--cursor", cursor, *flags]) == 0
    assert "... 2 more label(s)" in capsys.readouterr().out
