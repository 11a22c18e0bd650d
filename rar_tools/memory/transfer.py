"""Moving whole memories in and out of a store: export to a `.rar-memory` archive, import from one.

Import checks the whole archive (`MemoryArchive.verify`) and the encoder identity before writing
anything, then stores exemplar files and entries a chunk at a time with idempotent ids: importing
twice stores nothing new, and an import killed part-way is completed by running it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rar_tools.errors import EncoderMismatchError, MemoryStoreError
from rar_tools.memory.archive import Row, write_archive
from rar_tools.memory.archive_reader import MemoryArchive
from rar_tools.memory.entries import NewEntry
from rar_tools.memory.index import stored_identity
from rar_tools.memory.store import MemoryStore

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportOutcome:
    """What an import stored: new entries, entries already present, and the memory's size after."""

    memory: str
    added: int
    already_present: int
    count: int


def export_memory(store: MemoryStore, name: str, target: Path) -> dict[str, Any]:
    """Write memory `name` to the archive `target` (replaced atomically); returns its manifest.
    The store's writes wait meanwhile, so the archive is one consistent state of the memory."""
    with store.writing(name):
        collection = store.index.get(name)
        identity = stored_identity(collection.metadata)
        if identity is None:
            raise MemoryStoreError(f"memory {name!r} does not record its encoder, so it cannot be exported")
        pages = ((metadatas, embeddings) for _, metadatas, embeddings in store.index.embedding_pages(collection))
        return write_archive(target, name, identity, pages, store.files.path)


def new_entry(row: Row, embedding: np.ndarray) -> NewEntry:
    """The entry an archive row describes (its exemplar file is written by `add_copies`)."""
    return NewEntry(
        label=row["label"],
        kind=row["kind"],
        sha256=row["sha256"],
        embedding=embedding,
        source=row.get("source"),
        image_file=row.get("image_file"),
        category=row.get("category"),
        parent=row.get("parent"),
        added_at=row.get("added_at"),
    )


def check_target(store: MemoryStore, archive: MemoryArchive, name: str) -> None:
    """Refuse to import into a memory filled by another encoder than the archive's."""
    existing = store.index.find(name)
    stored = stored_identity(existing.metadata) if existing is not None else None
    if stored is not None and stored != archive.identity:
        raise EncoderMismatchError(
            f"memory {name!r} holds embeddings of CLIP {stored.describe()}, the archive those of "
            f"{archive.identity.describe()}: import it under another name (--as NAME), or move one of them "
            "to the other's encoder with `rar-tools reembed`"
        )


def import_memory(
    store: MemoryStore, archive: MemoryArchive, name: str | None = None, progress: Progress | None = None
) -> ImportOutcome:
    """Store the archive's entries in memory `name` (default: the archive's own), after checking
    the whole archive; ids are derived for the target name."""
    name = name or archive.memory
    check_target(store, archive, name)
    archive.verify()
    store.check_writable(f"importing into memory {name!r}")
    added = present = done = 0
    for rows, embeddings in archive.pages():
        copies = {row["sha256"]: archive.image_bytes(row["image_file"]) for row in rows if "image_file" in row}
        entries = [new_entry(row, embedding) for row, embedding in zip(rows, embeddings)]
        outcome = store.add_copies(name, archive.identity, entries, copies)
        added, present, done = added + len(outcome.added), present + len(outcome.already_present), done + len(rows)
        if progress:
            progress(done, archive.count)
    if archive.count == 0:
        store.add(name, archive.identity, [])
    return ImportOutcome(memory=name, added=added, already_present=present, count=store.count(name))
