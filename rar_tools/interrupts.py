"""Ctrl-C during long CLI work (`add --folder`, `eval`): the work stops at its next safe point, between
two images or two queries, never in the middle of a memory write, and says how far it got.

    with stop_on_interrupt() as stop:
        for done, item in enumerate(items):
            stop.check(done, len(items), "images")  # raises `Interrupted` after a Ctrl-C
            work(item)

A second Ctrl-C stops at once (`KeyboardInterrupt`), for work that has no safe point in sight.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODE = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


class Interrupted(Exception):
    """Work stopped by Ctrl-C at a safe point, after `done` of `total` units."""

    def __init__(self, done: int, total: int, unit: str, again: str = "") -> None:
        self.done, self.total, self.unit, self.again = done, total, unit, again
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """What the user reads: how far it got, and how to continue."""
        progress = f"interrupted after {self.done} of {self.total} {self.unit}"
        return f"{progress}; run the same command again{self.again} to continue"


class StopRequest:
    """Whether Ctrl-C asked the work to stop; `check` raises `Interrupted` at the work's safe points."""

    def __init__(self) -> None:
        self.requested = False

    def check(self, done: int, total: int, unit: str, again: str = "") -> None:
        if self.requested:
            raise Interrupted(done, total, unit, again)


@contextmanager
def stop_on_interrupt() -> Iterator[StopRequest]:
    """For the duration, Ctrl-C (SIGINT) asks for a stop instead of raising where the program happens
    to be; a second Ctrl-C raises `KeyboardInterrupt`. Outside the main thread, Ctrl-C is left as it is."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
