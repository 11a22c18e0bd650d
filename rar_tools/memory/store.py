"""The memory store: named memories of CLIP embeddings with their labels, and the exemplar files
their image entries point at, kept consistent together under the data folder's lock."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rar_tools.errors import DiskFaultError, MemoryStoreError
from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind
from rar_tools.locking import lock_data_dir, unlock_data_dir
from rar_tools.memory.entries import AddOutcome, Entry, ExemplarImage, Hit, MemorySummary, NewEntry
from rar_tools.memory.faults import Problem, WriteGuard, add_failure
from rar_tools.memory.files import ExemplarFiles
from rar_tools.memory.index import ChromaIndex, Collection, stored_identity
from rar_tools.memory.names import entry_id
from rar_tools.memory.orphans import OrphanCollection
from rar_tools.memory.snapshot import LocalIndex, open_local_index

log = logging.getLogger(__name__)

MAX_CACHED_LABELS = 2_000_000
DEFAULT_STORED_SIDE = 1024
CHROMA_FOLDER = "chroma"


class MemoryStore:
    """All memories under one data folder: `chroma/` (the index, unless `client` is a Chroma
    server's) and `images/` (exemplar copies).

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
    """

    def __init__(
        self, data_dir: Path, client: Any | None = None, lock_wait_s: float = 3.0, hnsw: dict[str, Any] | None = None
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.files = ExemplarFiles(self.data_dir)
        self._lock = lock_data_dir(self.data_dir, lock_wait_s)
        self._writes = self._lock.writes
        self._local: LocalIndex | None = None
        self._closed = False
        try:
            if client is None:
                self._local = open_local_index(self.data_dir / CHROMA_FOLDER)
                client = self._local.client
            self.index = ChromaIndex(client, hnsw)
        except BaseException:
            unlock_data_dir(self._lock)
            raise
        # Why writes are refused for as long as this store is open (a snapshot is read), or None.
        self.read_only: Problem | None = self._local.problem if self._local else None
        chroma = self.data_dir / CHROMA_FOLDER if self._local is not None else None
        self.guard = WriteGuard(self.data_dir, self.images_dir, chroma, self.read_only)
        # id -> (label, kind). An id is a hash of (memory, kind, content, label): this never goes stale.
        self.entry_labels: dict[str, tuple[str, EntryKind]] = {}
        # memory -> how many times entries were removed from it or it was dropped (see `generation`)
        self._generations: dict[str, int] = {}
        self.orphans: OrphanCollection | None = None  # this opening's collection of unreferenced files
        with self._writes:
            if not self._lock.tidied and self.write_problem(freeing=True) is None:  # first store since the lock
                self._lock.tidied = True
                self.files.tidy()
                self.orphans = OrphanCollection(self)

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
        `wait_s`. Idempotent."""
        if self._closed:
            return True
        if self.orphans is not None:
            self.orphans.stop()  # before taking the write lock: its pass takes that lock per chunk
        if not self._writes.acquire(timeout=-1 if wait_s is None else wait_s):
            return False
        try:
            self._closed = True
            if self._local is not None:
                self._local.close()
            unlock_data_dir(self._lock)
        finally:
            self._writes.release()
        return True

    def write_problem(self, freeing: bool = False) -> tuple[Problem, Path] | None:
        """Why this store cannot write now, and the folder at fault (see `WriteGuard.problem`)."""
        return self.guard.problem(freeing)

    def check_writable(self, doing: str, freeing: bool = False) -> None:
        """Refuse `doing` (e.g. "adding to memory 'm'") before anything is written, naming the data
        folder's condition, when it cannot take the write (a removal, `freeing`, may use a full disk)."""
        self.guard.check(doing, freeing)

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
        """The entry kinds memory `name` holds (recorded by adds and removals, not scanned)."""
        return self.index.kinds(self.index.get(name))

    def generation(self, name: str) -> int:
        """A counter that increases whenever entries of memory `name` are removed or it is dropped
        (by this store), so that what was learned about the memory before can be forgotten."""
        return self._generations.get(name, 0)

    def summary(self, name: str) -> MemorySummary:
        collection = self.index.get(name)
        metadatas = [m for _, page in self.index.pages(collection) for m in page]
        return MemorySummary(
            name=name,
            count=len(metadatas),
            label_counts=dict(Counter(m["label"] for m in metadatas).most_common()),
            kind_counts=dict(Counter(m["kind"] for m in metadatas)),
            encoder=stored_identity(collection.metadata),
        )

    # -- writing -----------------------------------------------------------------------------
    def add(self, name: str, identity: EncoderIdentity, entries: Sequence[NewEntry]) -> AddOutcome:
        """Store entries not already present (idempotent by id), in chunks within Chroma's batch
        size; creates the memory on first use and refuses another encoder than the one that filled it.

        For label texts, or image entries whose exemplar files are already written (an entry never
        points at a missing file): `add_images` writes the files and the entries together.
        """
        doing = f"adding to memory {name!r}"
        with self._writes:
            self.check_writable(doing)
            stored: list[str] = []
            try:
                with self.guard.faults(doing):
                    collection = self.index.get_or_create(name, identity)
                    return self._store_entries(name, collection, entries, stored)
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
        doing = f"adding to memory {name!r}"
        with self._writes:
            collection = self.index.find(name, identity)  # another encoder: refused before any file is written
            self.check_writable(doing)
            entries: list[NewEntry] = []
            created: set[str] = set()  # copies this call wrote
            stored: list[str] = []  # entry ids it stored
            try:
                with self.guard.faults(doing):
                    for image in images:
                        entries.append(self._image_entry(image, label, category, parent, max_side, created))
                    if collection is None:
                        collection = self.index.create(name, identity)
                    return self._store_entries(name, collection, entries, stored)
            except BaseException as exc:
                kept = {e.sha256 for e in entries if entry_id(name, e.kind, e.sha256, e.label) in set(stored)}
                self._delete_quietly(created - kept)
                if isinstance(exc, DiskFaultError):
                    raise add_failure(exc, stored) from exc.__cause__
                raise

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
        if not self.files.path(image.sha256).is_file():
            created.add(image.sha256)
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

    def _store_entries(
        self, name: str, collection: Collection, entries: Sequence[NewEntry], stored: list[str]
    ) -> AddOutcome:
        """Store the entries not present yet (`stored` is filled as they are), and record their kinds."""
        unique = {entry_id(name, e.kind, e.sha256, e.label): e for e in entries}
        added, present = self.index.add_new(collection, unique, stored)
        self._cache_labels({i: (e.label, e.kind) for i, e in unique.items()})
        self.index.note_kinds(collection, {unique[i].kind for i in added})
        return AddOutcome(added=added, already_present=present)

    def remove(self, name: str, ids: Iterable[str] | None = None, label: str | None = None) -> int:
        """Remove entries by id and/or by label; returns how many were removed. Exemplar files
        no entry of any memory uses any more are deleted after the entries. Refused, with nothing
        removed, when the data folder is read-only (a full one may be freed)."""
        doing = f"removing from memory {name!r}"
        with self._writes:
            collection = self.index.get(name)
            self.check_writable(doing, freeing=True)
            targets = self.index.metadata_by_id(collection, list(dict.fromkeys(ids))) if ids else {}
            if label is not None:
                targets.update(self.index.metadata_of_label(collection, label))
            with self.guard.faults(doing, then="removing the same again completes it"):
                self.index.delete(collection, list(targets))
            for removed in targets:
                self.entry_labels.pop(removed, None)
            if targets:
                self._next_generation(name)
                self._record_kinds_quietly(collection)
            self._delete_unused_after(doing, {m["sha256"] for m in targets.values() if m.get("image_file")})
            return len(targets)

    def drop(self, name: str) -> int:
        """Delete a whole memory; returns the number of entries it held."""
        doing = f"dropping memory {name!r}"
        with self._writes:
            collection = self.index.get(name)
            self.check_writable(doing, freeing=True)
            count = collection.count()
            pages = self.index.pages(collection)
            shas = {m["sha256"] for _, page in pages for m in page if m.get("image_file")}
            with self.guard.faults(doing):
                self.index.drop(name)
            self._next_generation(name)
            self._delete_unused_after(doing, shas)
            return count

    def _next_generation(self, name: str) -> None:
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

    def _record_kinds_quietly(self, collection: Collection) -> None:
        """Rescan and record the kinds a collection holds after a removal (an unrecorded kind is
        rescanned later, so a failure here is logged, not raised)."""
        try:
            self.index.record_kinds(collection, self.index.scan_kinds(collection))
        except Exception as exc:  # the disk filled up between the removal and the record
            log.warning("could not record the entry kinds after a removal: %s", exc)

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
        """(category, parent) of each of `ids` that exists (one read for all)."""
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

    def _cache_labels(self, labels: dict[str, tuple[str, EntryKind]]) -> None:
        if len(self.entry_labels) + len(labels) > MAX_CACHED_LABELS:
            self.entry_labels.clear()
        self.entry_labels.update(labels)

    # -- searching ---------------------------------------------------------------------------
    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list[Hit]:
        """Up to `n` nearest entries of any kind, best first: the fast, unfiltered search.

        Chroma returns ids and distances alone; labels and kinds come from `entry_labels`, and ids
        not seen yet are read once. Refuses an unknown memory and another encoder."""
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
            self._cache_labels(read)
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
