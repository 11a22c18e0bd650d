"""Models that load in the background: the server answers `initialize` at once, tools wait."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from rar_tools.errors import ModelLoadError, RarToolsError

T = TypeVar("T")
log = logging.getLogger(__name__)


class BackgroundModel(Generic[T]):
    """A value built once by `loader`, in a background thread or on first use."""

    def __init__(self, name: str, loader: Callable[[], T]) -> None:
        self.name = name
        self._loader = loader
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._value: T | None = None
        self._error: BaseException | None = None
        self.started_at: float | None = None

    def start(self) -> None:
        """Begin loading in a daemon thread (no-op if already started)."""
        with self._lock:
            if self._thread is None:
                self.started_at = time.monotonic()
                self._thread = threading.Thread(target=self._load, name=f"load-{self.name}", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            self._value = self._loader()
            log.info("%s ready after %.1f s", self.name, time.monotonic() - (self.started_at or 0))
        except BaseException as exc:  # kept and re-raised to every caller
            log.error("%s failed to load: %s", self.name, exc)
            self._error = exc
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._error is None

    @property
    def state(self) -> str:
        if self._thread is None:
            return "not started"
        if not self._done.is_set():
            return "loading"
        return "failed" if self._error else "ready"

    def wait(self, timeout: float | None = None) -> bool:
        """Start if needed and wait up to `timeout` seconds; True when finished (ready or failed)."""
        self.start()
        return self._done.wait(timeout)

    def get(self, timeout: float | None = None) -> T:
        """The loaded value; raises the loading error, or `ModelLoadError` on timeout."""
        if not self.wait(timeout):
            raise ModelLoadError(f"{self.name} is still loading after {timeout:.0f} s; try again shortly")
        if self._error is not None:
            if isinstance(self._error, RarToolsError):
                raise self._error
            raise ModelLoadError(f"{self.name} failed to load: {self._error}") from self._error
        return self._value  # type: ignore[return-value]
