"""`rar-tools serve` over stdio, spoken to in raw JSON-RPC lines as a hostile or broken client would:
every request gets an answer carrying its id, and the server keeps serving."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}

# Tool arguments holding a lone surrogate escape, written as raw JSON (json.dumps would escape the backslash)
SURROGATE_ARGUMENTS = {
    "path": ("add_to_memory", '{"memory": "m", "label": "a", "images": ["/tmp/bird\\ud800.png"]}'),
    "label": ("add_to_memory", '{"memory": "m", "labels": ["caf\\udce9"]}'),
    "candidate": ("rank_candidates", '{"image": "/tmp/x.png", "candidates": ["a", "\\udfff b"]}'),
    "argument-name": ("list_memories", '{"max_labels": 1, "\\ud83d": 2}'),
    "memory-argument": ("remove_from_memory", '{"memory": "m\\ud800", "label": "a"}'),
}


class RawServer:
    """A `rar-tools serve` process written to and read from line by line."""

    def __init__(self, data_dir: Path, clip_model: str) -> None:
        command = [sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(data_dir)]
        command += ["--clip-model", clip_model, "--no-ranker"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()

    def _read_lines(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def send(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def reply_to(self, request_id: int, timeout: float = 60) -> dict:
        """The next message answering `request_id` (notifications in between are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = json.loads(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            if message.get("id") == request_id:
                return message
        raise AssertionError(f"request {request_id} was not answered within {timeout} s")

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory, clip_model: str) -> RawServer:
    server = RawServer(tmp_path_factory.mktemp("raw") / "data", clip_model)
    server.send(json.dumps(INITIALIZE))
    assert "result" in server.reply_to(0)
    server.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    yield server
    server.close()


@pytest.mark.parametrize("where", sorted(SURROGATE_ARGUMENTS))
def test_a_request_with_a_lone_surrogate_is_answered_with_an_error(raw_server: RawServer, where: str) -> None:
    tool, arguments = SURROGATE_ARGUMENTS[where]
    request_id = 100 + sorted(SURROGATE_ARGUMENTS).index(where)
    raw_server.send(
        f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "tools/call", '
        f'"params": {{"name": "{tool}", "arguments": {arguments}}}}}'
    )
    reply = raw_server.reply_to(request_id)
    assert "lone UTF-16 surrogate" in reply["error"]["message"]


def test_a_request_that_is_not_json_rpc_is_answered_with_an_error(raw_server: RawServer) -> None:
    raw_server.send('{"jsonrpc": "1.0", "id": 7, "method": "tools/list"}')
    assert "not a valid JSON-RPC request" in raw_server.reply_to(7)["error"]["message"]


def test_the_server_keeps_serving_after_unreadable_lines(raw_server: RawServer) -> None:
    raw_server.send("this is not JSON at all")
    raw_server.send('{"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "list_memories"}}')
    assert raw_server.reply_to(8)["result"]["isError"] is False


@pytest.mark.parametrize("depth", [300, 5_000, 100_000])
def test_a_request_nested_too_deeply_is_answered_and_serving_goes_on(raw_server: RawServer, depth: int) -> None:
    """Past pydantic's depth (about 255) and past Python's (about 1,000): an error carrying the id,
    found without reading the nested values."""
    nested = "[" * depth + "]" * depth
    raw_server.send(
        f'{{"jsonrpc": "2.0", "id": {depth}, "method": "tools/call", '
        f'"params": {{"name": "list_memories", "arguments": {{"x": {nested}}}}}}}'
    )
    assert "nested too deeply" in raw_server.reply_to(depth)["error"]["message"]
    raw_server.send('{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "list_memories"}}')
    assert raw_server.reply_to(9)["result"]["isError"] is False


def test_an_invalid_request_is_answered_with_what_is_wrong_where(raw_server: RawServer) -> None:
    raw_server.send('{"jsonrpc": "1.0", "id": 10, "method": "tools/list"}')
    assert raw_server.reply_to(10)["error"]["message"] == "not a valid JSON-RPC request: jsonrpc: Input should be '2.0'"
