"""What a memory holds, as typed values: entries to add, stored entries, search hits, summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind


@dataclass(frozen=True)
class NewEntry:
    """An entry about to be stored. `image_file` is the exemplar copy's path relative to the data
    folder; the file must exist before the entry is added (`MemoryStore.add_images` does both)."""

    label: str
    kind: EntryKind
    sha256: str
    embedding: np.ndarray
    source: str | None = None
    image_file: str | None = None
    category: str | None = None
    parent: str | None = None
    added_at: str | None = None  # kept from an archive or an older memory; else the time of the add

    def metadata(self, added_at: str) -> dict[str, Any]:
        data = {"label": self.label, "kind": self.kind, "sha256": self.sha256, "added_at": self.added_at or added_at}
        optional = {
            "source": self.source,
            "image_file": self.image_file,
            "category": self.category,
            "parent": self.parent,
        }
        data.update({k: v for k, v in optional.items() if v})
        return data


@dataclass(frozen=True)
class ExemplarImage:
    """An exemplar image to store: the picture (its copy is written), the sha256 that identifies it,
    where it came from, and its embedding."""

    image: Image.Image
    sha256: str
    source: str | None
    embedding: np.ndarray


@dataclass(frozen=True)
class Entry:
    """A stored entry. `image_path` is the absolute path of the exemplar copy (None for a label text)."""

    id: str
    label: str
    kind: EntryKind
    sha256: str
    added_at: str
    source: str | None = None
    category: str | None = None
    parent: str | None = None
    image_path: Path | None = None

    @classmethod
    def from_metadata(cls, entry_id: str, metadata: dict[str, Any], data_dir: Path) -> Entry:
        image_file = metadata.get("image_file")
        return cls(
            id=entry_id,
            label=metadata["label"],
            kind=metadata["kind"],
            sha256=metadata["sha256"],
            added_at=metadata.get("added_at", ""),
            source=metadata.get("source"),
            category=metadata.get("category"),
            parent=metadata.get("parent"),
            image_path=data_dir / image_file if image_file else None,
        )


@dataclass(frozen=True)
class Hit:
    """One nearest neighbour: entry id, cosine similarity, label and kind."""

    id: str
    similarity: float
    label: str
    kind: EntryKind


@dataclass
class AddOutcome:
    """Ids of the entries an add stored, and of those it found already present (idempotent ids)."""

    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MemorySummary:
    """What a memory holds: counts per label and kind, and the encoder that filled it."""

    name: str
    count: int
    label_counts: dict[str, int]
    kind_counts: dict[str, int]
    encoder: EncoderIdentity | None
