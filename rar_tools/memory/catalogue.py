"""The catalogue: how many entries each memory holds per label and kind, kept at write time in a
side Chroma collection (`CATALOGUE`), so that listing a memory reads a few records instead of
every entry's metadata (about 4 s per 100k entries). (Chroma returns about 25 records a
millisecond, so the counts of all labels are one record, not one per label.) It also holds the write marks that keep
in-process mirrors honest (`mirror.py`).

Correct under concurrent writers, also several processes sharing a Chroma server, without
transactions: a write never updates a shared record in place. Each write adds its own *delta*
record (entries added or removed per label and kind, under a fresh id), so two writers never
overwrite each other; the counts are a snapshot plus the deltas, folded into the snapshot now
and then by `compact`.

What the deltas cannot see is checked against the memory itself: when the counts do not add up
to the memory's size (a writer killed between its entries and its delta, two writers adding the
same entry at once, two compactions racing), `MemoryStore.label_counts` rebuilds them from one
full read. A memory written before the catalogue existed has no `catalogued` marker and is
rebuilt the same way once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rar_tools.limits import EntryKind
from rar_tools.memory.names import chunks

log = logging.getLogger(__name__)

CATALOGUE = "rartools.catalogue"  # not "rar-...": never mistaken for a memory
COMPACT_AFTER = 16  # deltas of a memory before they are folded into its snapshot
BULK_DELTA = 64  # a delta of this many (label, kind) pairs is folded in at once
WRITE_BATCH = 5000
PLACEHOLDER = [0.0]  # Chroma stores an embedding with every record; the catalogue never searches
SEPARATOR = "\x00"

Counts = dict[tuple[str, EntryKind], int]


def record_id(*parts: str) -> str:
    return hashlib.sha256(SEPARATOR.join(parts).encode()).hexdigest()[:32]


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

    def _read(self, memory: str) -> tuple[bool, Counts, dict[str, Counts]]:
        """(catalogued, snapshot counts, deltas by record id) of `memory`."""
        got = self.records.get(where={"memory": memory}, include=["metadatas"])
        catalogued, snapshot, deltas = False, {}, {}
        for record, metadata in zip(got["ids"], got["metadatas"]):
            kind = metadata.get("record")
            if kind == "catalogued":
                catalogued = True
            elif kind == "snapshot":
                snapshot = decode(metadata["counts"])
            elif kind == "delta":
                deltas[record] = decode(metadata["counts"])
        return catalogued, snapshot, deltas

    def counts(self, memory: str) -> Counts | None:
        """Entries per (label, kind) of `memory` (labels with none left out), or None when it has
        never been catalogued."""
        catalogued, snapshot, deltas = self._read(memory)
        if not catalogued:
            return None
        return {pair: count for pair, count in add_up(snapshot, *deltas.values()).items() if count}

    def mark_catalogued(self, memory: str) -> None:
        """Record that every count of `memory` is kept (a new memory, or one just rebuilt)."""
        self._upsert([record_id(memory, "catalogued")], [{"memory": memory, "record": "catalogued"}])

    def note(self, memory: str, delta: Mapping[tuple[str, EntryKind], int]) -> None:
        """Record a write's change to the counts of `memory`, as a record of its own; fold the
        deltas into the snapshot when they are many, or this one is large."""
        if not any(delta.values()):
            return
        metadata = {"memory": memory, "record": "delta", "counts": encode(delta)}
        self._upsert([uuid.uuid4().hex], [metadata])
        self.compact(memory, 1 if len(delta) >= BULK_DELTA else COMPACT_AFTER)

    def compact(self, memory: str, at_least: int = COMPACT_AFTER) -> None:
        """Fold the deltas of `memory` into its snapshot once there are `at_least` of them. (Two
        compactions racing count some deltas twice; the size check then rebuilds the counts.)"""
        pending = self.records.get(where={"$and": [{"memory": memory}, {"record": "delta"}]}, include=[])["ids"]
        if len(pending) < at_least:
            return
        _, snapshot, deltas = self._read(memory)
        self._write_snapshot(memory, add_up(snapshot, *deltas.values()))
        self._delete(list(deltas))

    def rebuild(self, memory: str, metadatas: Iterable[dict[str, Any]]) -> Counts:
        """Replace the counts of `memory` with those of `metadatas` (every entry's, read after this
        call started), then mark it catalogued; returns the counts."""
        _, _, deltas = self._read(memory)
        counts: Counts = dict(Counter((m["label"], m["kind"]) for m in metadatas))
        try:
            self._write_snapshot(memory, counts)
            self._delete(list(deltas))
            self.mark_catalogued(memory)
        except Exception as exc:  # a full disk: the counts are right, and counted again next time
            log.warning("could not record the counts of memory %r: %s", memory, exc)
        return counts

    def read_marks(self, memory: str) -> dict[str, int]:
        """The last write mark of each writer (store) of `memory`: writer id -> sequence number."""
        got = self.records.get(where={"$and": [{"memory": memory}, {"record": "writer"}]}, include=["metadatas"])
        return {m["writer"]: int(m["seq"]) for m in got["metadatas"]}

    def mark_write(self, memory: str, writer: str, seq: int) -> None:
        """Record that `writer` changed `memory` (its `seq`-th write): mirrors of it are stale."""
        metadata = {"memory": memory, "record": "writer", "writer": writer, "seq": seq}
        self._upsert([record_id(memory, "writer", writer)], [metadata])

    def forget(self, memory: str) -> None:
        """Delete every record of `memory` (it was dropped)."""
        self.records.delete(where={"memory": memory})

    def _write_snapshot(self, memory: str, counts: Counts) -> None:
        """Make the snapshot record of `memory` say `counts`."""
        metadata = {"memory": memory, "record": "snapshot", "counts": encode(counts)}
        self._upsert([record_id(memory, "snapshot")], [metadata])

    def _upsert(self, ids: list[str], metadatas: list[dict[str, Any]]) -> None:
        for start in range(0, len(ids), WRITE_BATCH):
            part = slice(start, start + WRITE_BATCH)
            self.records.upsert(ids=ids[part], embeddings=[PLACEHOLDER] * len(ids[part]), metadatas=metadatas[part])

    def _delete(self, ids: list[str]) -> None:
        for chunk in chunks(ids, WRITE_BATCH):
            self.records.delete(ids=chunk)


def add_up(*parts: Mapping[tuple[str, EntryKind], int]) -> Counts:
    total: Counter[tuple[str, EntryKind]] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)


def encode(delta: Mapping[tuple[str, EntryKind], int]) -> str:
    return json.dumps({f"{label}{SEPARATOR}{kind}": n for (label, kind), n in delta.items() if n})


def decode(text: str) -> Counts:
    pairs = json.loads(text).items()
    return {tuple(key.split(SEPARATOR, 1)): int(n) for key, n in pairs}  # type: ignore[misc]
