"""Collecting orphan exemplar files: copies under `images/` that no entry of any memory references.

A process killed during an add (after writing a copy, before storing its entry) or during a
removal (after deleting the entries, before deleting their copies) leaves such files; so does a
removal whose files could not be deleted. When a store opens its data folder, a background thread
checks the stored copies against the index, a chunk at a time under the store's write lock (so a
copy is never deleted between its write and its entry), at most `MAX_FILES_CHECKED` per opening,
deletes the unreferenced ones and logs how many.
"""

from __future__ import annotations

import atexit
import logging
import threading
from itertools import islice
from typing import TYPE_CHECKING

from rar_tools.memory.names import chunks

if TYPE_CHECKING:
    from rar_tools.memory.store import MemoryStore

log = logging.getLogger(__name__)

MAX_FILES_CHECKED = 200_000  # per opening; a larger folder is collected over several openings
CHUNK = 1000  # copies checked per lock hold


class OrphanCollection:
    """One background pass over a store's exemplar copies. `collected` counts the files deleted so far,
    `checked` the copies examined; `wait()` waits for the pass to end, `stop()` ends it early."""

    def __init__(self, store: MemoryStore, limit: int = MAX_FILES_CHECKED) -> None:
        self.store = store
        self.limit = limit
        self.collected = 0
        self.checked = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rar-tools orphan collection", daemon=True)
        self._thread.start()
        atexit.register(self.stop)  # never cut off inside a Chroma call when the interpreter exits

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the pass to end; True if it has."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        """End the pass after the chunk in hand (the store is closing, or the process exiting)."""
        self._stop.set()
        self._thread.join()
        atexit.unregister(self.stop)

    def _run(self) -> None:
        try:
            copies = list(islice(self.store.files.stored_shas(), self.limit))
            for chunk in chunks(copies, CHUNK):
                if self._stop.is_set():
                    return
                self.collected += self.store.delete_unreferenced(set(chunk))
                self.checked += len(chunk)
            if self.collected:
                log.info(
                    "collected %d exemplar file(s) that no entry referenced (left by an interrupted add or removal)",
                    self.collected,
                )
        except Exception as exc:  # a closed client, a file system gone read-only: the next opening retries
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("collecting unreferenced exemplar files stopped: %s", self.error)
        finally:
            self._done.set()
