"""Network calls from synchronous code that end within a wall-clock limit, whatever the peer does.

A per-read timeout (httpx's) restarts with every byte, so a peer dripping its status line or body
a byte at a time held a call for as long as it liked. The calls here run as coroutines cancelled at
their deadline (`anyio.fail_after`), which closes the connection, so the limit is total wall time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio

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
