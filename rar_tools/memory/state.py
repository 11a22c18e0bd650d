"""What the parts of a `MemoryStore` share: the attributes `store.py` sets up (declared here for
the mixins `writes.StoreWrites` and `reads.StoreReads`) and the label cache both fill."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rar_tools.limits import EntryKind

if TYPE_CHECKING:
    from threading import RLock

    from rar_tools.memory.catalogue import Catalogue
    from rar_tools.memory.faults import WriteGuard
    from rar_tools.memory.files import ExemplarFiles
    from rar_tools.memory.index import ChromaIndex
    from rar_tools.memory.mirror import Mirrors

MAX_CACHED_LABELS = 2_000_000


class StoreState:
    """The state of one store (see `MemoryStore.__init__`)."""

    data_dir: Path
    files: ExemplarFiles
    index: ChromaIndex
    catalogue: Catalogue
    mirrors: Mirrors
    guard: WriteGuard
    # id -> (label, kind). An id is a hash of (memory, kind, content, label): this never goes stale.
    entry_labels: dict[str, tuple[str, EntryKind]]
    _writes: RLock
    _generations: dict[str, int]  # memory -> removals from it and drops of it (see `generation`)
    _checked: dict[str, dict[str, int]]  # memory -> write marks when its counts last added up

    def cache_labels(self, labels: dict[str, tuple[str, EntryKind]]) -> None:
        """Remember entries' labels and kinds (the cache starts again when it would grow too large)."""
        if len(self.entry_labels) + len(labels) > MAX_CACHED_LABELS:
            self.entry_labels.clear()
        self.entry_labels.update(labels)
