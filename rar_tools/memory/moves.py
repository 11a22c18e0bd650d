"""Moving entries within a store: to another label (`relabel`), and a whole staged memory into
place (`replace`, the last step of a re-embed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rar_tools.memory.entries import NewEntry
from rar_tools.memory.store import MemoryStore


def relabel(
    store: MemoryStore,
    name: str,
    to_label: str,
    ids: Sequence[str] = (),
    label: str | None = None,
    **levels: str | None,
) -> tuple[list[str], list[str]]:
    """Move entries (by id and/or every entry of `label`) to `to_label`: stored anew under ids
    derived for it, with the same embeddings and files, then the old ones removed. `levels`
    (category, parent) replace the entries' own when given. Returns (new ids, ids not found).
    Idempotent; a kill between the two steps leaves both, and running it again finishes."""
    doing = f"relabelling entries of memory {name!r}"
    with store.writing(name, doing):
        collection = store.index.get(name)
        found = store.index.with_embeddings(collection, ids=list(ids)) if ids else {}
        if label is not None:
            found.update(store.index.with_embeddings(collection, where={"label": label}))
        moving = {i: row for i, row in found.items() if row[0]["label"] != to_label}
        entries = [moved_entry(metadata, embedding, to_label, levels) for metadata, embedding in moving.values()]
        with store.guard.faults(doing, then="relabelling the same again completes it"):
            outcome = store.store_entries(name, collection, entries, [])
            store.index.delete(collection, list(moving))
        store.took_away(name, collection, {i: metadata for i, (metadata, _) in moving.items()})
        return outcome.added + outcome.already_present, [i for i in ids if i not in found]


def replace(store: MemoryStore, name: str, staging: str) -> None:
    """Make memory `staging` (written with ids derived for `name`) memory `name`, dropping the
    old one first if it exists. A kill in between leaves `staging` whole: call again to finish."""
    with store.writing(name, f"replacing memory {name!r} with its re-embedded copy"):
        if store.exists(name):
            store.drop(name)
        store.index.rename(staging, name)
        store.catalogue.forget(staging)
        store.mirrors.dropped(staging)
        store.next_generation(staging)
        store.label_counts(name)  # the counts of the memory under its new name


def moved_entry(metadata: dict[str, Any], embedding: np.ndarray, label: str, levels: dict[str, str | None]) -> NewEntry:
    """The entry `metadata` describes, moved to `label` (its category and parent replaced when given)."""
    kept = {key: metadata.get(key) for key in ("source", "image_file", "category", "parent", "added_at")}
    kept.update({key: value for key, value in levels.items() if value is not None})
    return NewEntry(label=label, kind=metadata["kind"], sha256=metadata["sha256"], embedding=embedding, **kept)
