"""The reads and searches of a `MemoryStore` (a mixin of it; the attributes are set up in
`store.py`): stored entries, exemplar files, levels, and the nearest entries of a query, from the
memory's in-process mirror when it is up to date, else from Chroma."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rar_tools.errors import MemoryStoreError
from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind
from rar_tools.memory.entries import Entry, Hit
from rar_tools.memory.state import MAX_CACHED_LABELS, StoreState


class StoreReads(StoreState):
    """Reads and searches of a `MemoryStore`."""

    # -- reading entries ---------------------------------------------------------------------
    def entries(self, name: str, ids: Sequence[str]) -> dict[str, Entry]:
        """The stored entries among `ids`, by id (ids not in the memory are left out)."""
        found = self.index.metadata_by_id(self.index.get(name), ids)
        return {i: Entry.from_metadata(i, m, self.data_dir) for i, m in found.items()}

    def image_entries(self, name: str, identity: EncoderIdentity) -> Iterable[tuple[Entry, np.ndarray]]:
        """Every exemplar-image entry of a memory with its stored embedding, a page read at a time.
        Refuses an unknown memory and another encoder."""
        collection = self.index.get(name, identity)
        for ids, metadatas, embeddings in self.index.embedding_pages(collection, {"kind": "image"}):
            for i, metadata, embedding in zip(ids, metadatas, embeddings):
                yield Entry.from_metadata(i, metadata, self.data_dir), embedding

    def exemplar_path(self, name: str, entry: str) -> Path:
        """The stored image file of one exemplar entry."""
        found = self.entries(name, [entry])
        if entry not in found:
            raise MemoryStoreError(f"memory {name!r} has no entry {entry!r}")
        path = found[entry].image_path
        if path is None:
            raise MemoryStoreError(f"entry {entry!r} of memory {name!r} is a label text, not an image")
        return path

    def levels(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """(category, parent) of each of `ids` that exists (its mirror's, or one read for all)."""
        mirror = self.mirrors.current(name)
        if mirror is not None:
            return mirror.levels(ids)
        found = self.index.metadata_by_id(self.index.get(name), ids)
        return {i: (m.get("category"), m.get("parent")) for i, m in found.items()}

    def read_labels(self, name: str) -> int:
        """Read every entry's label and kind into `entry_labels`, which searches otherwise fill as
        they meet new entries (about 4 s per 100k entries on 2 cores); returns the entries read."""
        read = 0
        for ids, metadatas in self.index.pages(self.index.get(name)):
            if len(self.entry_labels) + len(ids) > MAX_CACHED_LABELS:
                break
            self.entry_labels.update((i, (m["label"], m["kind"])) for i, m in zip(ids, metadatas))
            read += len(ids)
        return read

    # -- searching ---------------------------------------------------------------------------
    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list[Hit]:
        """Up to `n` nearest entries of any kind, best first: the fast, unfiltered search.

        From the memory's in-process mirror when it has an up-to-date one (`mirror`); else Chroma
        returns ids and distances alone, labels and kinds come from `entry_labels`, and ids not
        seen yet are read once. Refuses an unknown memory and another encoder."""
        mirrored = self.mirrors.nearest(name, identity, embedding, n)
        if mirrored is not None:
            return mirrored
        collection = self.index.get(name, identity)
        found = self.index.nearest(collection, embedding, n)
        known: dict[str, tuple[str, EntryKind]] = {}
        for i, _ in found:
            cached = self.entry_labels.get(i)
            if cached is not None:
                known[i] = cached
        missing = [i for i, _ in found if i not in known]
        if missing:
            read = {i: (m["label"], m["kind"]) for i, m in self.index.metadata_by_id(collection, missing).items()}
            self.cache_labels(read)
            known.update(read)
        # an entry removed by another writer since the search has no label: left out
        return [Hit(i, s, *known[i]) for i, s in found if i in known]

    def nearest_excluding(
        self,
        name: str,
        identity: EncoderIdentity,
        embedding: np.ndarray,
        kind: EntryKind,
        n: int,
        exclude_labels: Sequence[str] = (),
    ) -> list[Hit]:
        """Up to `n` nearest entries of `kind`, skipping `exclude_labels`, best first. Filtered:
        Chroma scans every entry's metadata first (slow in large memories); `nearest` is the fast path."""
        where: dict[str, Any] = {"kind": kind}
        if exclude_labels:
            where = {"$and": [where, {"label": {"$nin": list(exclude_labels)}}]}
        rows = self.index.nearest_where(self.index.get(name, identity), embedding, n, where)
        return [Hit(i, s, m["label"], m["kind"]) for i, s, m in rows]

    def best_exemplar_file(
        self, name: str, identity: EncoderIdentity, embedding: np.ndarray, label: str
    ) -> Path | None:
        """The stored image file of `label`'s exemplar nearest to `embedding`, if it has one."""
        where = {"$and": [{"kind": "image"}, {"label": label}]}
        for _, _, metadata in self.index.nearest_where(self.index.get(name, identity), embedding, 1, where):
            path = self.files.resolve(metadata["image_file"]) if metadata.get("image_file") else None
            if path is not None and path.is_file():
                return path
        return None
