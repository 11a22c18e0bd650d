"""The memory store: named memories of CLIP embeddings with their labels, and the exemplar files
their image entries point at, kept consistent together under the data folder's lock.

`MemoryStore` is opened and described here; its writes are in `writes.py`, its reads and searches
in `reads.py`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind
from rar_tools.locking import lock_data_dir, unlock_data_dir
from rar_tools.memory.catalogue import Catalogue, Counts
from rar_tools.memory.entries import MemorySummary
from rar_tools.memory.faults import Problem, WriteGuard
from rar_tools.memory.files import ExemplarFiles
from rar_tools.memory.index import ChromaIndex, close_http_client, stored_identity
from rar_tools.memory.mirror import LocalMarks, Mirrors
from rar_tools.memory.orphans import OrphanCollection
from rar_tools.memory.reads import StoreReads
from rar_tools.memory.snapshot import LocalIndex, open_local_index
from rar_tools.memory.state import MAX_CACHED_LABELS
from rar_tools.memory.writes import DEFAULT_STORED_SIDE, StoreWrites

log = logging.getLogger(__name__)

CHROMA_FOLDER = "chroma"
__all__ = ["CHROMA_FOLDER", "DEFAULT_STORED_SIDE", "MAX_CACHED_LABELS", "MemoryStore"]


class MemoryStore(StoreWrites, StoreReads):
    """All memories under one data folder: `chroma/` (the index, unless `client` is a Chroma
    server's; the store owns that client and closes it with itself) and `images/` (exemplar copies).

    Opening a store locks its data folder for this process (see `locking`): another process that
    opens the same folder is refused until this one closes the store or exits. Safe to share
    between threads: Chroma locks internally, and every write here (entries and exemplar files
    together) holds the folder's write lock, so a removal never deletes a file between its write
    and the entry pointing at it.

    Disk faults are named, and a refused write changes nothing: a write first checks that the data
    folder is writable and not full (`faults`); an add that fails half-way deletes the exemplar files it
    wrote for entries it did not store; a removal deletes entries only once their files can be deleted.
    A data folder that is read-only or full when the store opens is served from a read-only snapshot
    (`read_only` says why; writes are refused). Exemplar files that no entry references (left by a
    process killed during an add or a removal) are collected in the background after opening
    (`orphans`, see `collect_orphans`).

    Per-label counts are kept at write time (`catalogue`), and each searched memory is mirrored in
    process (`mirrors`, when `mirror` and faiss is installed); both change only once a write did.
    """

    def __init__(
        self,
        data_dir: Path,
        client: Any | None = None,
        lock_wait_s: float = 3.0,
        hnsw: dict[str, Any] | None = None,
        mirror: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.files = ExemplarFiles(self.data_dir)
        self._lock = lock_data_dir(self.data_dir, lock_wait_s)
        self._writes = self._lock.writes
        self._local: LocalIndex | None = None
        self._server_client = client  # a Chroma server's client, given to this store to own
        self._closed = False
        try:
            if client is None:
                self._local = open_local_index(self.data_dir / CHROMA_FOLDER)
                client = self._local.client
            self.index = ChromaIndex(client, hnsw)
            self.catalogue = Catalogue(client)
            self.mirrors = self._mirrors(mirror)
        except BaseException:
            self._close_client()
            unlock_data_dir(self._lock)
            raise
        # Why writes are refused for as long as this store is open (a snapshot is read), or None.
        self.read_only: Problem | None = self._local.problem if self._local else None
        chroma = self.data_dir / CHROMA_FOLDER if self._local is not None else None
        self.guard = WriteGuard(self.data_dir, self.images_dir, chroma, self.read_only)
        self.entry_labels = {}
        self._generations = {}
        self._checked = {}
        self.orphans: OrphanCollection | None = None  # this opening's collection of unreferenced files
        with self._writes:
            if not self._lock.tidied and self.write_problem(freeing=True) is None:  # first store since the lock
                self._lock.tidied = True
                self.files.tidy()
                self.orphans = OrphanCollection(self)

    def _mirrors(self, enabled: bool) -> Mirrors:
        """The in-process mirrors of this store's memories. Their write marks live in this process
        for an embedded folder (the folder lock excludes other writers), in the catalogue for a server."""
        if self._local is not None:
            marks = LocalMarks(self._lock.marks)
            return Mirrors(marks.read, marks.write, self._contents, enabled)
        return Mirrors(self.catalogue.read_marks, self.catalogue.mark_write, self._contents, enabled)

    @property
    def images_dir(self) -> Path:
        return self.files.images_dir

    @property
    def client(self) -> Any:
        """The Chroma client (for diagnostics and tests; callers use the methods here)."""
        return self.index.client

    def close(self, wait_s: float | None = None) -> bool:
        """Close the Chroma client this store opened (and its snapshot) and release the data folder,
        once no write is running: waits up to `wait_s` seconds for one (None: as long as it takes).
        Returns False, having closed nothing but the orphan collection, when a write still runs after
        `wait_s`. Mirror builds in progress end after the page in hand. Idempotent."""
        if self._closed:
            return True
        if self.orphans is not None:
            self.orphans.stop()  # before taking the write lock: its pass takes that lock per chunk
        if not self._writes.acquire(timeout=-1 if wait_s is None else wait_s):
            return False
        try:
            self._closed = True
            self.mirrors.close()
            self._close_client()
            unlock_data_dir(self._lock)
        finally:
            self._writes.release()
        return True

    def _close_client(self) -> None:
        """Close the embedded index, or the Chroma server's client (its connections)."""
        if self._local is not None:
            self._local.close()
        elif self._server_client is not None:
            close_http_client(self._server_client)

    # -- memories ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of all memories, sorted."""
        return self.index.names()

    def exists(self, name: str) -> bool:
        """Whether memory `name` exists (an invalid name is refused)."""
        return self.index.find(name) is not None

    def require(self, name: str) -> None:
        """Refuse an unknown memory, naming the memories there are (one lookup when it exists)."""
        self.index.get(name)

    def count(self, name: str) -> int:
        """Entries in memory `name`."""
        return self.index.get(name).count()

    def holds_label(self, name: str, label: str) -> bool:
        """Whether memory `name` has an entry of `label` (one filtered read, not a scan of every entry)."""
        return bool(self.index.metadata_of_label(self.index.get(name), label))

    def kinds(self, name: str) -> set[EntryKind]:
        """The entry kinds memory `name` holds (its mirror's, or recorded by adds and removals)."""
        mirror = self.mirrors.current(name)
        return mirror.kinds() if mirror is not None else self.index.kinds(self.index.get(name))

    def generation(self, name: str) -> int:
        """A counter that increases whenever entries of memory `name` are removed or it is dropped
        (by this store), for caches of what the memory holds."""
        return self._generations.get(name, 0)

    def summary(self, name: str) -> MemorySummary:
        """Counts per label (most first, then by name) and per kind, and the encoder, from the catalogue."""
        collection = self.index.get(name)
        counts = self.label_counts(name)
        per_label: Counter[str] = Counter()
        per_kind: Counter[str] = Counter()
        for (label, kind), count in counts.items():
            per_label[label] += count
            per_kind[kind] += count
        return MemorySummary(
            name=name,
            count=sum(counts.values()),
            label_counts=dict(sorted(per_label.items(), key=lambda item: (-item[1], item[0]))),
            kind_counts=dict(per_kind),
            encoder=stored_identity(collection.metadata),
        )

    def label_counts(self, name: str) -> Counts:
        """Entries per (label, kind) of memory `name`, kept by the catalogue at write time; rebuilt
        from a full read when never catalogued, or when the counts do not add up to the memory's
        size (a writer was killed between its entries and its counts). The size is checked once
        per state of other writers' marks (counting a collection costs 15 ms per 100k entries); this
        store's own writes are counted as they happen (`writing`)."""
        with self._writes:
            collection = self.index.get(name)
            marks = {w: seq for w, seq in self.mirrors.marks(name).items() if w != self.mirrors.writer}
            counts = self.catalogue.counts(name)
            if counts is None or (self._checked.get(name) != marks and sum(counts.values()) != collection.count()):
                log.info("counting the entries of memory %r per label (one full read)", name)
                counts = self.catalogue.rebuild(name, (m for _, page in self.index.pages(collection) for m in page))
            self._checked[name] = marks
            return counts

    def _contents(self, name: str) -> tuple[EncoderIdentity | None, Iterable[tuple[list[str], list, np.ndarray]]]:
        """The encoder of memory `name` and its entries' (ids, metadatas, embeddings), a page at a time."""
        collection = self.index.get(name)
        return stored_identity(collection.metadata), self.index.embedding_pages(collection)
