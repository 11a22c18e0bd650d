"""The memory store: named memories of CLIP embeddings with their labels, and the exemplar files
their image entries point at, kept consistent together under the data folder's lock."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rar_tools.errors import MemoryStoreError
from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind
from rar_tools.locking import lock_data_dir, unlock_data_dir
from rar_tools.memory.catalogue import Catalogue, Counts
from rar_tools.memory.entries import AddOutcome, Entry, ExemplarImage, Hit, MemorySummary, NewEntry
from rar_tools.memory.files import ExemplarFiles
from rar_tools.memory.index import ChromaIndex, Collection, open_persistent_client, stored_identity
from rar_tools.memory.mirror import LocalMarks, Mirrors
from rar_tools.memory.names import entry_id

log = logging.getLogger(__name__)

MAX_CACHED_LABELS = 2_000_000
DEFAULT_STORED_SIDE = 1024


class MemoryStore:
    """All memories under one data folder: `chroma/` (the index, unless `client` is a Chroma
    server's) and `images/` (exemplar copies).

    Opening a store locks its data folder for this process (see `locking`): another process that
    opens the same folder is refused until this one closes the store or exits. Safe to share
    between threads: Chroma locks internally, and every write here (entries and exemplar files
    together) holds the folder's write lock, so a removal never deletes a file between its write
    and the entry pointing at it.
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
        self._owns_client = client is None
        self._closed = False
        try:
            with self._writes:
                if not self._lock.tidied:  # first store since this process took the folder
                    self.files.tidy()
                    self._lock.tidied = True
            if client is None:
                client = open_persistent_client(self.data_dir / "chroma")
            self.index = ChromaIndex(client, hnsw)
            self.catalogue = Catalogue(client)
            marks = LocalMarks(self._lock.marks) if self._owns_client else None  # else: a shared server
            self.mirrors = Mirrors(
                marks.read if marks else self.catalogue.read_marks,
                marks.write if marks else self.catalogue.mark_write,
                self._contents,
                mirror,
            )
        except BaseException:
            unlock_data_dir(self._lock)
            raise
        # id -> (label, kind). An id is a hash of (memory, kind, content, label): this never goes stale.
        self.entry_labels: dict[str, tuple[str, EntryKind]] = {}
        # memory -> how many times entries were removed from it or it was dropped (see `generation`)
        self._generations: dict[str, int] = {}
        self._checked: dict[str, dict[str, int]] = {}  # memory -> write marks when its counts last added up

    @property
    def images_dir(self) -> Path:
        return self.files.images_dir

    @property
    def client(self) -> Any:
        """The Chroma client (for diagnostics and tests; callers use the methods here)."""
        return self.index.client

    def close(self) -> None:
        """Close the Chroma client this store opened and release the data folder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self.index.client.close()
        unlock_data_dir(self._lock)

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

    def kinds(self, name: str) -> set[EntryKind]:
        """The entry kinds memory `name` holds (its mirror's, or recorded by adds and removals)."""
        mirror = self.mirrors.current(name)
        return mirror.kinds() if mirror is not None else self.index.kinds(self.index.get(name))

    def generation(self, name: str) -> int:
        """A counter that increases whenever entries of memory `name` are removed or it is dropped
        (by this store), so that what was learned about the memory before can be forgotten."""
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

    # -- writing -----------------------------------------------------------------------------
    def add(
        self, name: str, identity: EncoderIdentity, entries: Sequence[NewEntry], ids_for: str | None = None
    ) -> AddOutcome:
        """Store entries not already present (idempotent by id), in chunks within Chroma's batch
        size; creates the memory on first use and refuses another encoder than the one that filled it.
        Ids derive from `ids_for` when given (a memory written under a staging name, see `replace`).

        For label texts, or image entries whose exemplar files are already written (an entry never
        points at a missing file): `add_images` writes the files and the entries together.
        """
        with self.writing(name):
            return self._store_entries(name, self._writable(name, identity), entries, ids_for)

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
        written atomically and fsynced), then their entries, all under the write lock."""

        def write_files(written: set[str]) -> list[NewEntry]:
            entries = []
            for image in images:
                entries.append(self._image_entry(image, label, category, parent, max_side))
                written.add(image.sha256)
            return entries

        return self._add_with_files(name, identity, write_files)

    def add_copies(
        self, name: str, identity: EncoderIdentity, entries: Sequence[NewEntry], copies: dict[str, bytes]
    ) -> AddOutcome:
        """Store entries whose exemplar copies come as JPEG bytes by sha256 (an import): the files
        first, then the entries, under the write lock."""

        def write_files(written: set[str]) -> list[NewEntry]:
            for sha, data in copies.items():
                self.files.write_copy(sha, data)
                written.add(sha)
            return list(entries)

        return self._add_with_files(name, identity, write_files)

    def _add_with_files(
        self, name: str, identity: EncoderIdentity, write_files: Callable[[set[str]], list[NewEntry]]
    ) -> AddOutcome:
        """Write exemplar files, then the entries `write_files` returns; on failure, delete the files
        it wrote that no entry uses. Another encoder is refused before any file is written."""
        with self.writing(name):
            collection = self.index.find(name, identity)
            written: set[str] = set()
            try:
                entries = write_files(written)
                return self._store_entries(name, collection or self._writable(name, identity), entries)
            except BaseException:
                self._delete_unused_quietly(written)
                raise

    def _image_entry(
        self, image: ExemplarImage, label: str, category: str | None, parent: str | None, max_side: int
    ) -> NewEntry:
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

    def _store_entries(
        self, name: str, collection: Collection, entries: Sequence[NewEntry], ids_for: str | None = None
    ) -> AddOutcome:
        unique = {entry_id(ids_for or name, e.kind, e.sha256, e.label): e for e in entries}
        added, present = self.index.add_new(collection, unique)
        self._cache_labels({i: (e.label, e.kind) for i, e in unique.items()})
        if added:
            rows = [unique[i] for i in added]
            vectors = np.stack([e.embedding for e in rows]).astype(np.float32)
            self.mirrors.wrote(name, ([e.metadata("") for e in rows], added, vectors))
        self.index.note_kinds(collection, {unique[i].kind for i in added})
        self._counted(name, [(unique[i].label, unique[i].kind) for i in added], +1)
        return AddOutcome(added=added, already_present=present)

    def remove(self, name: str, ids: Iterable[str] | None = None, label: str | None = None) -> int:
        """Remove entries by id and/or by label; returns how many were removed. Exemplar files
        no entry of any memory uses any more are deleted after the entries."""
        with self.writing(name):
            collection = self.index.get(name)
            targets = self.index.metadata_by_id(collection, list(ids)) if ids else {}
            if label is not None:
                targets.update(self.index.metadata_of_label(collection, label))
            self.index.delete(collection, list(targets))
            for removed in targets:
                self.entry_labels.pop(removed, None)
            if targets:
                self._next_generation(name)
                self.mirrors.wrote(name, removed=list(targets))
                self.index.settle_kinds(collection)
                self._counted(name, [(m["label"], m["kind"]) for m in targets.values()], -1)
            self._delete_unused({m["sha256"] for m in targets.values() if m.get("image_file")})
            return len(targets)

    def drop(self, name: str) -> int:
        """Delete a whole memory; returns the number of entries it held."""
        with self.writing(name):
            collection = self.index.get(name)
            count = collection.count()
            pages = self.index.pages(collection)
            shas = {m["sha256"] for _, page in pages for m in page if m.get("image_file")}
            self.index.drop(name)
            self.catalogue.forget(name)
            self.mirrors.dropped(name)
            self._next_generation(name)
            self._delete_unused(shas)
            return count

    @contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """Hold the write lock for a write to memory `name`; a write that fails part-way has its
        counts checked against the memory at the next listing."""
        with self._writes:
            try:
                yield
            except BaseException:
                self._checked.pop(name, None)
                raise

    def _contents(self, name: str) -> tuple[EncoderIdentity | None, Iterable[tuple[list[str], list, np.ndarray]]]:
        """The encoder of memory `name` and its entries' (ids, metadatas, embeddings), a page at a time."""
        collection = self.index.get(name)
        return stored_identity(collection.metadata), self.index.embedding_pages(collection)

    def _counted(self, name: str, pairs: list[tuple[str, EntryKind]], sign: int) -> None:
        """Record in the catalogue that entries of these (label, kind) were added (+1) or removed (-1)."""
        if pairs:
            self.catalogue.note(name, {pair: sign * n for pair, n in Counter(pairs).items()})

    def _next_generation(self, name: str) -> None:
        self._generations[name] = self._generations.get(name, 0) + 1

    def _delete_unused(self, shas: set[str]) -> None:
        """Delete the exemplar copies of `shas` that no entry of any memory uses."""
        if shas:
            self.files.delete(shas - self.index.shas_in_use(shas))

    def _delete_unused_quietly(self, shas: set[str]) -> None:
        """`_delete_unused` after a failed add: a second failure must not hide the first."""
        try:
            self._delete_unused(shas)
        except Exception as exc:  # the index may be what failed
            log.warning("could not tidy exemplar files after a failed add: %s", exc)

    # -- reading entries ---------------------------------------------------------------------
    def entries(self, name: str, ids: Sequence[str]) -> dict[str, Entry]:
        """The stored entries among `ids`, by id (ids not in the memory are left out)."""
        found = self.index.metadata_by_id(self.index.get(name), ids)
        return {i: Entry.from_metadata(i, m, self.data_dir) for i, m in found.items()}

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

    def _cache_labels(self, labels: dict[str, tuple[str, EntryKind]]) -> None:
        if len(self.entry_labels) + len(labels) > MAX_CACHED_LABELS:
            self.entry_labels.clear()
        self.entry_labels.update(labels)

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

