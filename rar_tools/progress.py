"""One tool call's progress notifications, always increasing, as MCP requires.

A call may first wait for its models (seconds, no total known), then do its work in steps (of a
known total). Both count on one scale: each second of waiting is one step, and the work's steps
follow the steps already sent, so a call that waited 4 s and then added 3 images reports 1, 2, 3, 4
(waiting), then 7 of 7 (3 images done), never 3 of 3 after 4.
"""

from __future__ import annotations

import functools
import threading
from typing import Protocol

import anyio.from_thread


class Reporter(Protocol):
    """What sends a notification: `mcp`'s `Context.report_progress`."""

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send one progress notification (nothing when the client asked for none)."""


class CallProgress:
    """The progress of one call, sent through `reporter`; thread-safe."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.sent = 0.0  # the last value sent
        self._count = 0  # notifications sent
        self._lock = threading.Lock()

    def _next(self, progress: float) -> bool:
        """Whether `progress` may be sent next (the first of all, or beyond the last), recorded if so."""
        with self._lock:
            if self._count and progress <= self.sent:
                return False
            self.sent, self._count = progress, self._count + 1
            return True

    async def waiting(self, message: str) -> None:
        """One more step of waiting (the total is not known yet)."""
        if self._next(self.sent + 1):
            await self.reporter.report_progress(self.sent, None, message)

    async def step(self, done: int, total: int, message: str, base: float) -> None:
        """`done` of the work's `total` steps, counted from `base` (the steps sent before the work began)."""
        if self._next(base + done):
            await self.reporter.report_progress(base + done, base + total, message)

    def work(self, what: str) -> WorkProgress:
        """The work's progress callback, counting on from the steps sent so far."""
        return WorkProgress(self, what, self.sent)


class WorkProgress:
    """`(done, total)` callbacks of one piece of work, from the worker thread that runs it, sent as
    steps after those of `progress` before the work began."""

    def __init__(self, progress: CallProgress, what: str, base: float) -> None:
        self.progress, self.what, self.base = progress, what, base

    def __call__(self, done: int, total: int) -> None:
        message = f"{self.what}: {done}/{total}"
        anyio.from_thread.run(functools.partial(self.progress.step, done, total, message, self.base))

    async def started(self) -> None:
        """Work of one step begun (for work that reports no steps of its own)."""
        await self.progress.step(0, 1, self.what, self.base)

    async def finished(self) -> None:
        """Work of one step done."""
        await self.progress.step(1, 1, f"{self.what}: done", self.base)
