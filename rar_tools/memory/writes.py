"""The writes of a `MemoryStore` (a mixin of it; the attributes are set up in `store.py`): adds,
removals and drops, each under the data folder's write lock, refused before anything changes when
the data folder cannot take it (`faults`), and followed by the bookkeeping that depends on them
(the label cache, the in-process mirror, the kinds record, the catalogue's counts), which happens
only once the write itself did.

A write that fails part-way leaves that bookkeeping to be redone from the index: its mirror is
rebuilt and its counts are checked against the memory at the next listing (`writing`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rar_tools.errors import DiskFaultError, RarToolsError
from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind
from rar_tools.memory.entries import AddOutcome, ExemplarImage, NewEntry
from rar_tools.memory.faults import Problem, add_failure
from rar_tools.memory.index import Collection
from rar_tools.memory.names import entry_id
from rar_tools.memory.state import StoreState

log = logging.getLogger(__name__)

DEFAULT_STORED_SIDE = 1024
RemovedEntries = Mapping[str, Mapping[str, Any]]  # entry id -> its metadata


def changed_something(exc: BaseException) -> bool:
    """Whether a write that raised `exc` may have changed the memory: a `RarToolsError` other than a
    disk fault is raised before anything is written (an unknown memory, another encoder, a bad image)."""
    return isinstance(exc, DiskFaultError) or not isinstance(exc, RarToolsError)


class StoreWrites(StoreState):
    """Adds, removals and drops of a `MemoryStore`."""

    # -- write checks ----------------------------------------------------------------------------
    def write_problem(self, freeing: bool = False) -> tuple[Problem, Path] | None:
        """Why this store cannot write now, and the folder at fault (see `WriteGuard.problem`)."""
        return self.guard.problem(freeing)

    def check_writable(self, doing: str, freeing: bool = False) -> None:
        """Refuse `doing` (e.g. "adding to memory 'm'") before anything is written, naming the data
        folder's condition, when it cannot take the write (a removal, `freeing`, may use a full disk)."""
        self.guard.check(doing, freeing)

    @contextmanager
    def writing(self, name: str, doing: str | None = None, freeing: bool = False) -> Iterator[None]:
        """Hold the write lock for a write to memory `name`; with `doing`, refuse it first (nothing
        changed) when the data folder cannot take it. A write that fails part-way has its counts
        checked against the memory at the next listing and its mirror rebuilt."""
        with self._writes:
            if doing is not None:
                self.check_writable(doing, freeing)
            try:
                yield
            except BaseException as exc:
                self._checked.pop(name, None)
                if changed_something(exc):
                    self.mirrors.invalidate(name)
                raise

    # -- adding ----------------------------------------------------------------------------------
    def add(
        self, name: str, identity: EncoderIdentity, entries: Sequence[NewEntry], ids_for: str | None = None
    ) -> AddOutcome:
        """Store entries not already present (idempotent by id), in chunks within Chroma's batch
        size; creates the memory on first use and refuses another encoder than the one that filled it.
        Ids derive from `ids_for` when given (a memory written under a staging name, see `moves.replace`).

        For label texts, or image entries whose exemplar files are already written (an entry never
        points at a missing file): `add_images` writes the files and the entries together.
        """
        doing = f"adding to memory {name!r}"
        with self.writing(name, doing):
            stored: list[str] = []
            try:
                with self.guard.faults(doing):
                    return self.store_entries(name, self._writable(name, identity), entries, stored, ids_for)
            except DiskFaultError as exc:
                raise add_failure(exc, stored) from exc.__cause__

    def add_images(
        self,
        name: str,
        identity: EncoderIdentity,
        images: Sequence[ExemplarImage],
        label: str,
        category: str | None = None,
        parent: str | None = None,
        max_side: int = DEFAULT_STORED_SIDE,
    ) -> AddOutcome:
        """Store exemplar images under `label`: each one's bounded JPEG copy (content addressed,
        written atomically and fsynced), then their entries, all under the write lock. If it fails,
        the copies it wrote for entries it did not store are deleted again."""

        def write_files(created: set[str]) -> list[NewEntry]:
            return [self._image_entry(image, label, category, parent, max_side, created) for image in images]

        return self._add_with_files(name, identity, write_files)

    def add_copies(
        self, name: str, identity: EncoderIdentity, entries: Sequence[NewEntry], copies: dict[str, bytes]
    ) -> AddOutcome:
        """Store entries whose exemplar copies come as JPEG bytes by sha256 (an import): the files
        first, then the entries, under the write lock; as `add_images` if it fails."""

        def write_files(created: set[str]) -> list[NewEntry]:
            for sha, data in copies.items():
                self._note_new_copy(sha, created)
                self.files.write_copy(sha, data)
            return list(entries)

        return self._add_with_files(name, identity, write_files)

    def _add_with_files(
        self, name: str, identity: EncoderIdentity, write_files: Callable[[set[str]], list[NewEntry]]
    ) -> AddOutcome:
        """Write exemplar files, then the entries `write_files` returns (it notes the copies it
        creates). Another encoder is refused before any file is written; on failure, the created
        copies no stored entry uses are deleted, and a disk fault says what was stored."""
        doing = f"adding to memory {name!r}"
        with self.writing(name, doing):
            collection = self.index.find(name, identity)  # another encoder: refused before any file is written
            created: set[str] = set()
            stored: list[str] = []
            entries: list[NewEntry] = []
            try:
                with self.guard.faults(doing):
                    entries = write_files(created)
                    return self.store_entries(name, collection or self._writable(name, identity), entries, stored)
            except BaseException as exc:
                stored_ids = set(stored)
                kept = {e.sha256 for e in entries if entry_id(name, e.kind, e.sha256, e.label) in stored_ids}
                self._delete_quietly(created - kept)
                if isinstance(exc, DiskFaultError):
                    raise add_failure(exc, stored) from exc.__cause__
                raise

    def _note_new_copy(self, sha256: str, created: set[str]) -> None:
        """Add `sha256` to `created` when its copy is not stored yet (this call will create it)."""
        if not self.files.path(sha256).is_file():
            created.add(sha256)

    def _image_entry(
        self,
        image: ExemplarImage,
        label: str,
        category: str | None,
        parent: str | None,
        max_side: int,
        created: set[str],
    ) -> NewEntry:
        """The entry of one exemplar, its copy written (or reused: `created` gets the sha256 of a new one)."""
        self._note_new_copy(image.sha256, created)
        return NewEntry(
            label=label,
            kind="image",
            sha256=image.sha256,
            embedding=image.embedding,
            source=image.source,
            image_file=self.files.write(image, max_side),
            category=category,
            parent=parent,
        )

    def _writable(self, name: str, identity: EncoderIdentity) -> Collection:
        """The collection of memory `name`, created (and catalogued, empty) on first use."""
        collection = self.index.find(name, identity)
        if collection is None:
            collection = self.index.get_or_create(name, identity)
            self.catalogue.mark_catalogued(name)
        return collection

    def store_entries(
        self,
        name: str,
        collection: Collection,
        entries: Sequence[NewEntry],
        stored: list[str],
        ids_for: str | None = None,
    ) -> AddOutcome:
        """Store the entries not present yet (`stored` is filled as they are; ids derive from
        `ids_for` or `name`), then bring the label cache, the mirror, the kinds record and the counts
        up to date with the ones added. Under the write lock."""
        unique = {entry_id(ids_for or name, e.kind, e.sha256, e.label): e for e in entries}
        added, present = self.index.add_new(collection, unique, stored)
        self.cache_labels({i: (e.label, e.kind) for i, e in unique.items()})
        if added:
            rows = [unique[i] for i in added]
            vectors = np.stack([e.embedding for e in rows]).astype(np.float32)
            self.mirrors.wrote(name, ([e.metadata("") for e in rows], added, vectors))
        self.index.note_kinds(collection, {unique[i].kind for i in added})
        self.counted(name, [(unique[i].label, unique[i].kind) for i in added], +1)
        return AddOutcome(added=added, already_present=present)

    # -- removing --------------------------------------------------------------------------------
    def remove(self, name: str, ids: Iterable[str] | None = None, label: str | None = None) -> int:
        """Remove entries by id and/or by label; returns how many were removed. Exemplar files
        no entry of any memory uses any more are deleted after the entries. Refused, with nothing
        removed, when the data folder is read-only (a full one may be freed)."""
        doing = f"removing from memory {name!r}"
        with self.writing(name, doing, freeing=True):
            collection = self.index.get(name)
            targets = self.index.metadata_by_id(collection, list(dict.fromkeys(ids))) if ids else {}
            if label is not None:
                targets.update(self.index.metadata_of_label(collection, label))
            with self.guard.faults(doing, then="removing the same again completes it"):
                self.index.delete(collection, list(targets))
            self.took_away(name, collection, targets)
            self._delete_unused_after(doing, {m["sha256"] for m in targets.values() if m.get("image_file")})
            return len(targets)

    def took_away(self, name: str, collection: Collection, removed: RemovedEntries) -> None:
        """Bring the label cache, the generation, the mirror, the kinds record and the counts up to
        date after the entries `removed` were deleted. The records are written quietly: a removal may
        be freeing a full disk, and a record not written is redone from the index (`writing`)."""
        for entry in removed:
            self.entry_labels.pop(entry, None)
        if not removed:
            return
        self.next_generation(name)
        self.mirrors.wrote(name, removed=list(removed))
        try:
            self.index.settle_kinds(collection)
            self.counted(name, [(m["label"], m["kind"]) for m in removed.values()], -1)
        except Exception as exc:  # the disk filled up between the removal and the records
            self._checked.pop(name, None)
            log.warning("could not record the kinds and counts of memory %r after a removal: %s", name, exc)

    def drop(self, name: str) -> int:
        """Delete a whole memory; returns the number of entries it held."""
        doing = f"dropping memory {name!r}"
        with self.writing(name, doing, freeing=True):
            collection = self.index.get(name)
            count = collection.count()
            shas = {m["sha256"] for _, page in self.index.pages(collection) for m in page if m.get("image_file")}
            with self.guard.faults(doing):
                self.index.drop(name)
            self._checked.pop(name, None)
            self.mirrors.dropped(name)
            self.next_generation(name)
            try:
                self.catalogue.forget(name)
            except Exception as exc:  # left-over counts of a re-created memory fail the size check
                log.warning("could not delete the counts of dropped memory %r: %s", name, exc)
            self._delete_unused_after(doing, shas)
            return count

    # -- records and files -----------------------------------------------------------------------
    def counted(self, name: str, pairs: list[tuple[str, EntryKind]], sign: int) -> None:
        """Record in the catalogue that entries of these (label, kind) were added (+1) or removed (-1)."""
        if pairs:
            self.catalogue.note(name, {pair: sign * n for pair, n in Counter(pairs).items()})

    def next_generation(self, name: str) -> None:
        """Entries of memory `name` were removed, or it was dropped (see `generation`)."""
        self._generations[name] = self._generations.get(name, 0) + 1

    def delete_unreferenced(self, shas: set[str]) -> int:
        """Delete the exemplar copies among `shas` that no entry of any memory references; returns how
        many were deleted. Under the write lock, so a copy an add has written but not yet stored an
        entry for is never among them."""
        with self._writes:
            return self.files.delete(shas - self.index.shas_in_use(shas)) if shas else 0

    def _delete_unused_after(self, doing: str, shas: set[str]) -> None:
        """Delete the copies of `shas` no entry uses any more, once their entries are gone; a failure
        says that the entries are gone and that the files will be collected at the next opening."""
        try:
            self.delete_unreferenced(shas)
        except OSError as exc:
            raise DiskFaultError(
                f"{doing}: the entries were removed, but their exemplar files could not be deleted "
                f"({exc.strerror or exc}); they are collected the next time the store opens with the data "
                "folder writable"
            ) from exc

    def _delete_quietly(self, shas: set[str]) -> None:
        """Delete copies a failed add wrote: a second failure must not hide the first."""
        try:
            self.files.delete(shas)
        except OSError as exc:
            log.warning("could not delete %d exemplar files of a failed add (collected later): %s", len(shas), exc)
