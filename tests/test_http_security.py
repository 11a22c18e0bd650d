"""`rar-tools serve --transport http` as a subprocess, attacked over HTTP: bearer tokens (hashed at rest,
a read-only kind), the Host and Origin checks a reverse proxy must pass, the body limit, and the access
log kept off stdout."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from conftest import free_port
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
BODY_LIMIT = 2**20


@dataclass
class Served:
    """A running server: its /mcp URL, port, process and the files its stdout and stderr go to."""

    url: str
    port: int
    process: subprocess.Popen
    stdout: Path
    stderr: Path


def rar_tools(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rar_tools", *args], capture_output=True, text=True, timeout=120)


def make_token(token_file: Path, *flags: str) -> str:
    made = rar_tools("token", "--auth-token-file", str(token_file), *flags)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory, clip_model: str) -> Iterator:
    """Start `rar-tools serve --transport http` with extra flags; returns a `Served` once it answers HTTP."""
    processes: list[subprocess.Popen] = []

    def run(*flags: str) -> Served:
        folder = tmp_path_factory.mktemp("http")
        port = free_port()
        command = [sys.executable, "-m", "rar_tools", "serve", "--data-dir", str(folder / "data"), "--no-ranker"]
        command += ["--clip-model", clip_model, "--transport", "http", "--port", str(port), *flags]
        with (folder / "stdout").open("w") as out, (folder / "stderr").open("w") as err:
            processes.append(subprocess.Popen(command, stdout=out, stderr=err))
        served = Served(f"http://127.0.0.1:{port}/mcp", port, processes[-1], folder / "stdout", folder / "stderr")
        deadline = time.monotonic() + 90
        while True:
            assert served.process.poll() is None, served.stderr.read_text()
            try:
                httpx.get(served.url, timeout=1)
                return served
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not answer in time"
                time.sleep(0.3)

    yield run
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Secured:
    served: Served
    token: str
    read_only_token: str
    token_file: Path


@pytest.fixture(scope="module")
def secured(start, tmp_path_factory: pytest.TempPathFactory) -> Secured:
    """A server requiring tokens (one full, one read-only), accepting one proxied Host and Origin, with
    a 1 MiB body limit."""
    token_file = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    token, read_only_token = make_token(token_file), make_token(token_file, "--read-only")
    served = start(
        "--auth-token-file",
        str(token_file),
        "--allowed-hosts",
        "mcp.example.com",
        "--allowed-origins",
        "https://app.example.com",
        "--http-max-request-bytes",
        str(BODY_LIMIT),
    )
    return Secured(served, token, read_only_token, token_file)


def post(url: str, token: str | None = None, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **auth, **headers}, timeout=30)


async def call_with_token(url: str, token: str, tool: str, arguments: dict):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        return await client.call_tool(tool, arguments)


# -- bearer tokens ------------------------------------------------------------------------------
def test_without_a_token_a_request_gets_401_with_a_bearer_challenge(secured: Secured) -> None:
    answer = post(secured.served.url)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer ")


def test_a_wrong_token_gets_401(secured: Secured) -> None:
    assert post(secured.served.url, token=secured.token + "x").status_code == 401


def test_a_token_made_by_rar_tools_token_may_call_every_tool(secured: Secured) -> None:
    added = anyio.run(
        call_with_token, secured.served.url, secured.token, "add_to_memory", {"memory": "m", "labels": ["a", "b"]}
    )
    assert not added.is_error, added.content


def test_a_read_only_token_may_call_only_the_read_only_tools(secured: Secured) -> None:
    url, token = secured.served.url, secured.read_only_token
    listed = anyio.run(call_with_token, url, token, "list_memories", {})
    added = anyio.run(call_with_token, url, token, "add_to_memory", {"memory": "m", "labels": ["c"]})
    removed = anyio.run(call_with_token, url, token, "remove_from_memory", {"memory": "m", "label": "a"})
    assert not listed.is_error
    for refused in (added, removed):
        assert refused.is_error and "this bearer token is read-only" in refused.content[0].text


def test_the_token_file_holds_hashes_never_tokens(secured: Secured) -> None:
    text = secured.token_file.read_text()
    assert secured.token not in text and secured.read_only_token not in text
    lines = text.splitlines()
    assert len(lines) == 2 and all(line.startswith("sha256:") for line in lines)
    assert lines[1].endswith(" read-only") and oct(secured.token_file.stat().st_mode)[-3:] == "600"


def test_a_malformed_token_file_stops_the_server_with_its_line(tmp_path: Path, clip_model: str) -> None:
    token_file = tmp_path / "tokens.txt"
    token_file.write_text("# tokens\nmy-plain-secret-token\n")
    out = rar_tools("serve", "--transport", "http", "--data-dir", str(tmp_path / "d"), "--clip-model", clip_model,
                    "--no-ranker", "--port", str(free_port()), "--auth-token-file", str(token_file))  # fmt: skip
    assert out.returncode == 2 and f"{token_file}:2: expected 'sha256:" in out.stderr


# -- Host and Origin ----------------------------------------------------------------------------
def test_a_proxied_host_is_refused_unless_allowed(start, secured: Secured) -> None:
    plain = start()
    assert post(plain.url, Host="mcp.example.com").status_code == 421
    assert post(secured.served.url, token=secured.token, Host="mcp.example.com").status_code == 200


def test_a_foreign_origin_is_refused_unless_allowed(secured: Secured) -> None:
    url, token = secured.served.url, secured.token
    assert post(url, token=token, Origin="https://evil.example.org").status_code == 403
    assert post(url, token=token, Origin="https://app.example.com").status_code == 200


# -- the body limit -----------------------------------------------------------------------------
def raw_post(port: int, body_bytes: int, chunked: bool, token: str) -> bytes:
    """POST `body_bytes` to /mcp over a plain socket, the whole body sent before reading: the first
    bytes of the answer (a reset would raise instead)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {body_bytes}"
        head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        head += "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        sock.sendall(f"{head}{length}\r\n\r\n".encode())
        for start in range(0, body_bytes, 2**16):
            piece = b"a" * min(2**16, body_bytes - start)
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return sock.recv(64)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_gets_413(secured: Secured, chunked: bool) -> None:
    answer = raw_post(secured.served.port, 8 * BODY_LIMIT, chunked, secured.token)
    assert answer.startswith(b"HTTP/1.1 413")


# -- logging ------------------------------------------------------------------------------------
def test_the_access_log_goes_to_stderr_never_stdout(start) -> None:
    plain = start()
    post(plain.url)
    deadline = time.monotonic() + 30  # the line is written after the answer, on the server's time
    while '"POST /mcp HTTP/1.1"' not in plain.stderr.read_text():
        assert time.monotonic() < deadline, "no access log line on stderr"
        time.sleep(0.05)
    assert plain.stdout.read_text() == ""
