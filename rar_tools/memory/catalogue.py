"""The catalogue: how many entries each memory holds per label and kind, kept up to date at write
time in a side Chroma collection (`CATALOGUE`), so that listing a memory reads one small record per
label instead of every entry's metadata (about 4 s per 100k entries).

Correct under concurrent writers, also several processes sharing a Chroma server, without
transactions: a writer changes entries first, then *recounts* each (label, kind) it touched from
the entries themselves and writes that count, repeating until a recount after its write agrees.
Whichever write of a record comes last was followed by its writer's recount, which saw every entry
written before it; so the last word on a record is always a true count.

A writer killed between its entries and its recount leaves counts that no longer add up to the
memory's size; `MemoryStore.label_counts` notices and rebuilds them from a full read. A memory
written before the catalogue existed has no `catalogued` marker and is rebuilt the same way once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rar_tools.limits import EntryKind
from rar_tools.memory.names import chunks

CATALOGUE = "rartools.catalogue"  # not "rar-...": never mistaken for a memory
MAX_RECOUNTS = 20
LABELS_PER_READ = 500
WRITE_BATCH = 5000
PLACEHOLDER = [0.0]  # Chroma stores an embedding with every record; the catalogue never searches

Counts = dict[tuple[str, EntryKind], int]


def record_id(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


class Catalogue:
    """The per-label counts of every memory of one Chroma client (embedded or a server)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._collection: Any | None = None

    @property
    def records(self) -> Any:
        """The catalogue collection, created on first use."""
        if self._collection is None:
            self._collection = self.client.get_or_create_collection(CATALOGUE, embedding_function=None)
        return self._collection

    def counts(self, memory: str) -> Counts | None:
        """Entries per (label, kind) of `memory`, or None when it has never been catalogued."""
        got = self.records.get(where={"memory": memory}, include=["metadatas"])
        counts: Counts = {}
        catalogued = False
        for metadata in got["metadatas"]:
            if metadata.get("record") == "catalogued":
                catalogued = True
            elif metadata.get("record") == "count":
                counts[(metadata["label"], metadata["kind"])] = int(metadata["count"])
        return counts if catalogued else None

    def mark_catalogued(self, memory: str) -> None:
        """Record that every count of `memory` is kept (a new memory, or one just rebuilt)."""
        self.records.upsert(
            ids=[record_id(memory, "catalogued")],
            embeddings=[PLACEHOLDER],
            metadatas=[{"memory": memory, "record": "catalogued"}],
        )

    def recount(self, memory: str, collection: Any, pairs: Iterable[tuple[str, EntryKind]]) -> None:
        """Write the true count of each (label, kind) of `memory`, recounting until it holds (each
        round reads the entries of the labels in question once, in bulk)."""
        pending = sorted(set(pairs))
        for _ in range(MAX_RECOUNTS):
            if not pending:
                return
            counts = count_entries(collection, pending)
            self._write(memory, counts)
            again = count_entries(collection, pending)
            pending = [pair for pair in pending if again[pair] != counts[pair]]

    def rebuild(self, memory: str, metadatas: Iterable[dict[str, Any]]) -> Counts:
        """Replace the counts of `memory` with those of `metadatas` (every entry's), then mark it
        catalogued; returns the counts."""
        counts: Counts = dict(Counter((m["label"], m["kind"]) for m in metadatas))
        stale = set((self.counts(memory) or {}).keys()) - counts.keys()
        self._write(memory, {**dict.fromkeys(stale, 0), **counts})
        self.mark_catalogued(memory)
        return counts

    def forget(self, memory: str) -> None:
        """Delete every record of `memory` (it was dropped)."""
        self.records.delete(where={"memory": memory})

    def _write(self, memory: str, counts: Counts) -> None:
        """Write the count records (a count of 0 deletes its record)."""
        keys = {pair: record_id(memory, "count", *pair) for pair in counts}
        gone = [keys[pair] for pair, count in counts.items() if count <= 0]
        kept = [(pair, count) for pair, count in counts.items() if count > 0]
        for chunk in chunks(gone, WRITE_BATCH):
            self.records.delete(ids=chunk)
        for chunk in chunks(kept, WRITE_BATCH):
            self.records.upsert(
                ids=[keys[pair] for pair, _ in chunk],
                embeddings=[PLACEHOLDER] * len(chunk),
                metadatas=[
                    {"memory": memory, "record": "count", "label": label, "kind": kind, "count": count}
                    for (label, kind), count in chunk
                ],
            )


def count_entries(collection: Any, pairs: list[tuple[str, EntryKind]]) -> Counts:
    """How many entries of each (label, kind) a memory's collection holds (0 included): one read
    of the metadata of those labels' entries per `LABELS_PER_READ` labels (an indexed lookup)."""
    found: Counter[tuple[str, EntryKind]] = Counter()
    for chunk in chunks(sorted({label for label, _ in pairs}), LABELS_PER_READ):
        got = collection.get(where={"label": {"$in": chunk}}, include=["metadatas"])
        found.update((m["label"], m["kind"]) for m in got["metadatas"])
    return {pair: found[pair] for pair in pairs}
