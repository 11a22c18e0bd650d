"""Serving MCP over stdio, answering the requests the SDK's transport cannot read.

The SDK's stdio transport hands a line it cannot parse to the session as an exception, and the
session drops it: a request whose JSON holds a lone UTF-16 surrogate escape (`"\\ud800"`, which
Python's `json` reads but pydantic's parser refuses) was never answered, and its client waited for
its own timeout. Here such a line still gets a JSON-RPC error for its id, saying what is wrong; so does
a request nested too deeply for either parser (its id is found without reading the nested values). A
line that is not JSON at all has no id to answer, and is logged on stderr.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import ErrorData, JSONRPCError

from rar_tools.jsontext import NestedTooDeeply, parse_json, top_level_scalars

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


async def serve_stdio(server: MCPServer) -> None:
    """Run `server` over this process's stdin and stdout (as `MCPServer.run("stdio")` does), answering
    unreadable requests with an error instead of dropping them."""
    lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async runs; the SDK offers no other handle
    async with stdio_server() as (read_stream, write_stream):
        answering = AnsweringReadStream(read_stream, write_stream)
        await lowlevel.run(answering, write_stream, lowlevel.create_initialization_options())


class AnsweringReadStream:
    """The transport's read stream, with each unreadable request answered on `write_stream` (and
    left out) instead of passed to the session, which would drop it unanswered."""

    def __init__(self, inner: Any, write_stream: Any) -> None:
        self.inner = inner
        self.write_stream = write_stream

    @property
    def last_context(self) -> Any:
        """The sender's context of the last message (the session reads it from the stream)."""
        return getattr(self.inner, "last_context", None)

    async def receive(self) -> Any:
        while True:
            item = await self.inner.receive()
            if not isinstance(item, Exception):
                return item
            reply = unreadable_reply(item)
            if reply is None:
                log.warning("ignored a message that is not a JSON-RPC request: %s", str(item).splitlines()[0])
                continue
            log.info("answered an unreadable request (id %r): %s", reply.id, reply.error.message)
            await self.write_stream.send(SessionMessage(reply))

    def __aiter__(self) -> AnsweringReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self) -> AnsweringReadStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def unreadable_reply(exc: Exception) -> JSONRPCError | None:
    """The error answering the request behind a transport's parse exception, or None when it has no
    request id to answer (not JSON, a notification, or a response)."""
    message, too_deep = raw_message(exc)
    request_id = message.get("id") if message is not None and "method" in message else None
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
        return None
    if too_deep:
        error = ErrorData(
            code=PARSE_ERROR,
            message="the request's JSON is nested too deeply to read (arrays or objects within each other "
            "hundreds of levels deep): no tool takes arguments like that",
        )
    elif has_lone_surrogate(message):
        error = ErrorData(
            code=PARSE_ERROR,
            message="the request contains a lone UTF-16 surrogate escape (such as \\ud800) in a string, which is "
            "not text: send characters outside the Basic Multilingual Plane as a surrogate pair or as UTF-8",
        )
    else:
        error = ErrorData(code=INVALID_REQUEST, message=f"not a valid JSON-RPC request: {first_problem(exc)}")
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=error)


def raw_message(exc: Exception) -> tuple[dict[str, Any] | None, bool]:
    """The JSON object a validation error was raised for, read with Python's more lenient parser,
    and whether it is nested too deeply for that (then only its top-level scalars are read)."""
    errors = getattr(exc, "errors", None)
    for error in errors() if callable(errors) else []:
        given = error.get("input")
        if isinstance(given, str):
            try:
                given = parse_json(given)
            except NestedTooDeeply:
                return top_level_scalars(given), True
            except ValueError:
                continue
        if isinstance(given, dict):
            return given, "recursion limit" in error.get("msg", "")  # pydantic reads less depth than Python
    return None, False


def first_problem(exc: Exception) -> str:
    """What the first validation error says (where, and what), else the exception's first line."""
    errors = getattr(exc, "errors", None)
    for error in errors() if callable(errors) else []:
        where = ".".join(str(part) for part in error.get("loc", ())[1:])  # [0] names the union member tried
        return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))
    return str(exc).splitlines()[0]


def has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys included) holds a lone surrogate; walked without
    recursion, since `value` may nest as deeply as Python's parser reads."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if any(unicodedata.category(ch) == "Cs" for ch in item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
