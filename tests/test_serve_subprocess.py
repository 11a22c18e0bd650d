"""`rar-tools serve` as a subprocess: over stdio, as a desktop host runs it, and over streamable HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters


def serve_params(data_dir: Path, clip_model: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "rar_tools", "serve", "--data-dir", str(data_dir), "--clip-model", clip_model, "--no-ranker"],
    )


async def add_then_count(params: StdioServerParameters, image: str | None) -> int:
    async with Client(params, mode="legacy") as client:
        if image:
            result = await client.call_tool("add_to_memory", {"memory": "m", "label": "red", "images": [image]})
            assert not result.is_error, result.content
        listing = await client.call_tool("list_memories", {})
        return listing.structured_content["memories"][0]["count"]


def test_stdio_server_serves_and_entries_survive_a_restart(tmp_path: Path, clip_model: str, image_folder: Path) -> None:
    params = serve_params(tmp_path / "data", clip_model)
    assert anyio.run(add_then_count, params, str(image_folder / "red" / "0.png")) == 1
    assert anyio.run(add_then_count, params, None) == 1  # a new process sees the stored entry


def test_stdout_carries_only_protocol_messages(tmp_path: Path, clip_model: str) -> None:
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "add_to_memory", "arguments": {"memory": "m", "labels": ["a", "b"]}},
        },
    ]
    params = serve_params(tmp_path / "data", clip_model)
    process = subprocess.Popen(
        [params.command, *params.args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        process.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
        process.stdin.flush()
        lines = []
        while not any('"id":2' in line.replace(" ", "") for line in lines):
            line = process.stdout.readline()
            assert line, "the server closed stdout before answering"
            lines.append(line)
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    lines += [line for line in process.stdout.read().splitlines() if line.strip()]
    messages = [json.loads(line) for line in lines]  # every stdout line is JSON-RPC
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    assert {m.get("id") for m in messages} >= {1, 2}
    reply = next(m for m in messages if m.get("id") == 2)
    assert reply["result"]["structuredContent"]["added"] == 2


@pytest.mark.parametrize("flag", ["--help"])
def test_serve_help_lists_the_settings(flag: str) -> None:
    out = subprocess.run([sys.executable, "-m", "rar_tools", "serve", flag], capture_output=True, text=True, timeout=60)
    assert "--clip-model" in out.stdout and "RAR_TOOLS_CLIP_MODEL" in out.stdout


def test_streamable_http_sessions_share_one_server_and_one_model(http_server, tmp_path: Path) -> None:
    url = http_server("--no-ranker")

    async def two_agents() -> tuple[dict, dict]:
        async with Client(url) as agent_a, Client(url) as agent_b:
            first = (await agent_b.call_tool("list_memories", {})).structured_content
            added = await agent_a.call_tool("add_to_memory", {"memory": "shared", "labels": ["a", "b"]})
            assert not added.is_error, added.content
            seen_by_b = await agent_b.call_tool("list_memories", {})
        return first, seen_by_b.structured_content

    first, seen_by_b = anyio.run(two_agents)
    assert first["memories"] == [] and first["data_dir"].endswith("data")
    assert [(m["name"], m["count"]) for m in seen_by_b["memories"]] == [("shared", 2)]
    assert (tmp_path / "server-0.log").read_text().count("CLIP encoder ready") == 1
