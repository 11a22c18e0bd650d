"""What a client sees when it gets something wrong, and how tools present themselves: in-process
through `mcp.Client`, and over stdio for what only the wire shows (error codes, the log)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from rar_tools.bench.startup import INITIALIZED, initialize_request
from rar_tools.server import create_server

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
PYDANTIC_INTERNALS = ("Arguments", "pydantic.dev", "validation error for", "type=")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def tool_error(tools, name: str, arguments: dict) -> str:
    async with Client(create_server(tools)) as client:
        result = await client.call_tool(name, arguments)
    assert result.is_error
    return result.content[0].text


async def test_a_wrongly_typed_argument_is_refused_in_a_sentence_naming_it(tools) -> None:
    text = await tool_error(tools, "retrieve_candidates", {"memory": "m", "image": "/x.png", "k": "abc"})
    assert text == "Error executing tool retrieve_candidates: k must be an integer from 1 to 50, got 'abc'"


async def test_a_missing_argument_is_named_without_pydantic_internals(tools) -> None:
    text = await tool_error(tools, "retrieve_candidates", {"image": "/x.png"})
    assert "`memory` is required" in text and not any(internal in text for internal in PYDANTIC_INTERNALS)


async def test_a_list_of_the_wrong_type_is_refused_in_our_words(tools) -> None:
    text = await tool_error(tools, "add_to_memory", {"memory": "m", "labels": "not a list"})
    assert "labels" in text and not any(internal in text for internal in PYDANTIC_INTERNALS)


async def test_an_argument_the_tool_does_not_take_is_refused_naming_the_ones_it_takes(tools) -> None:
    text = await tool_error(tools, "retrieve_candidates", {"memory": "m", "image": "/x.png", "top_k": 3})
    assert text.startswith("Error executing tool retrieve_candidates: retrieve_candidates takes no argument 'top_k'; ")
    assert "its arguments are memory, image, k," in text


async def test_an_unknown_argument_changes_nothing(tools) -> None:
    async with Client(create_server(tools)) as client:
        result = await client.call_tool("add_to_memory", {"memory": "fresh", "labels": ["a"], "lable": "b"})
        listed = await client.call_tool("list_memories", {})
    assert result.is_error and "'lable'" in result.content[0].text
    assert "fresh" not in [m["name"] for m in listed.structured_content["memories"]]


async def test_tools_have_titles_and_descriptions_without_source_indentation(tools) -> None:
    async with Client(create_server(tools)) as client:
        listed = (await client.list_tools()).tools
    for tool in listed:
        assert tool.title and tool.title != tool.name, tool.name
        lines = tool.description.splitlines()
        assert lines[0].strip() == lines[0] and not any(line.startswith(" ") for line in lines), tool.name


async def test_a_prompt_without_its_required_argument_is_invalid_params(tools, caplog) -> None:
    caplog.set_level(logging.INFO)
    async with Client(create_server(tools)) as client:
        with pytest.raises(MCPError) as raised:
            await client.get_prompt("recognize_step_by_step", {"memory": "birds"})
    assert raised.value.error.code == INVALID_PARAMS
    assert raised.value.error.message == "prompt 'recognize_step_by_step' needs the argument 'image'"
    refusals = [r for r in caplog.records if "prompt request refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].exc_info is None
    assert not any(r.exc_info for r in caplog.records)


async def test_an_unknown_prompt_or_argument_is_invalid_params(tools) -> None:
    async with Client(create_server(tools)) as client:
        with pytest.raises(MCPError, match="unknown prompt 'nope'; prompts: recognize_step_by_step") as unknown:
            await client.get_prompt("nope", {})
        with pytest.raises(MCPError, match="takes no argument 'colour'") as extra:
            await client.get_prompt("recognize_step_by_step", {"image": "/x.png", "colour": "red"})
    assert unknown.value.error.code == extra.value.error.code == INVALID_PARAMS


def exchange(tmp_path: Path, clip_model: str, messages: list[dict], answers: set[int]) -> tuple[list[dict], str]:
    """Write `messages` to a stdio server, read until the requests `answers` are answered, then close
    its stdin; its replies and its stderr."""
    command = [sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(tmp_path / "data"), "--no-ranker"]
    command += ["--clip-model", clip_model]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        try:
            process.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
            process.stdin.flush()
            replies = []
            while answers - {reply.get("id") for reply in replies}:
                line = process.stdout.readline()
                assert line, "the server closed stdout before answering"
                replies.append(json.loads(line))
        finally:
            process.stdin.close()
            process.wait(timeout=30)
        stderr.seek(0)
        return replies, stderr.read()


def test_a_request_before_initialize_says_so_and_prompt_errors_are_invalid_params(
    tmp_path: Path, clip_model: str
) -> None:
    early = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    prompt = {"jsonrpc": "2.0", "id": 3, "method": "prompts/get", "params": {"name": "recognize_step_by_step"}}
    initialize = json.loads(initialize_request()) | {"id": 2}
    replies, stderr = exchange(tmp_path, clip_model, [early, initialize, INITIALIZED, prompt], {1, 2, 3})
    by_id = {reply["id"]: reply for reply in replies}
    assert by_id[1]["error"]["code"] == INVALID_PARAMS
    assert by_id[1]["error"]["message"].startswith("the server has not been initialized: send `initialize` first")
    assert "result" in by_id[2]
    assert by_id[3]["error"] == {
        "code": INVALID_PARAMS,
        "message": "prompt 'recognize_step_by_step' needs the argument 'image'",
    }
    assert "Traceback" not in stderr and stderr.count("prompt request refused") == 1
