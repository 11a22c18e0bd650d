"""Network calls from synchronous code that end within a wall-clock limit and read at most a
given number of bytes, whatever the peer does.

A per-read timeout (httpx's) restarts with every byte, so a peer dripping its status line or body
a byte at a time held a call for as long as it liked. The calls here run as coroutines cancelled at
their deadline (`anyio.fail_after`), which closes the connection, so the limit is total wall time.
`run_async` runs one on an event loop made for the call; a `LoopThread` keeps one loop running, so
that what lives on it (a client's pool of open connections) serves call after call. `read_at_most`
reads a body as it streams in, so an endless or lying one is refused at the limit, not held in memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, TypeVar

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

T = TypeVar("T")


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`await fn(*args)` from synchronous code: in this thread when it runs no event loop (the
    server's worker threads, the CLI), else in a helper thread (the synchronous API called from
    async code, such as a notebook cell), since a thread runs one event loop at a time."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(fn, *args)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, fn, *args).result()


class BodyTooLarge(Exception):
    """A response body over the limit: `declared` is its announced length, None when it streamed past."""

    def __init__(self, declared: int | None) -> None:
        super().__init__(declared)
        self.declared = declared


async def read_at_most(response: httpx.Response, max_bytes: int) -> bytes:
    """The (decoded) body of a streamed `response`; `BodyTooLarge` as soon as it passes `max_bytes`,
    or before reading when its declared length does."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(int(declared))
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(None)
    return bytes(body)


class LoopThread:
    """An event loop in a daemon thread of its own, started on first use, that synchronous code
    (any thread, one running an event loop included) hands coroutines to. Objects made on it keep
    working from one call to the next; `close` stops it, and a later call starts it again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._running: tuple[ExitStack, BlockingPortal] | None = None

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await fn(*args)` on the loop, waited for in this thread."""
        return self._portal().call(fn, *args)

    def _portal(self) -> BlockingPortal:
        with self._lock:
            if self._running is None:
                stack = ExitStack()
                self._running = (stack, stack.enter_context(start_blocking_portal(name=self.name)))
            return self._running[1]

    @property
    def started(self) -> bool:
        return self._running is not None

    def close(self) -> None:
        """Stop the loop (its remaining tasks are let finish) and end the thread."""
        with self._lock:
            running, self._running = self._running, None
        if running is not None:
            running[0].close()
