"""The memory store: named Chroma collections of CLIP embeddings with their labels and exemplar files."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import EncoderMismatchError, MemoryStoreError, describe
from rar_tools.locking import lock_data_dir, unlock_data_dir

log = logging.getLogger(__name__)

EntryKind = Literal["image", "text"]
MEMORY_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
COLLECTION_PREFIX = "rar-"
SCHEMA_VERSION = 1
# Chroma HNSW settings of new memories. Measured with `rar-tools bench --sections retrieve --sizes 100000
# --hnsw ...` (100k clustered 512-d exemplars over 1,000 labels, 200 queries, 2 CPU cores):
#   max_neighbors 16, ef_construction 100, ef_search 100 (Chroma's defaults): build 52 s, p50 8.2 ms,
#     label recall@5 0.982, @20 0.985: misses recall@5 >= 0.99
#   max_neighbors 32, ef_construction 100, ef_search 64:  build 58 s,  p50 7.4 ms, recall@5 1.000, @20 0.985
#   max_neighbors 32, ef_construction 200, ef_search 128: build 112 s, p50 6.0 ms, recall@5 0.999, @20 0.987
#   max_neighbors 64, ef_construction 200, ef_search 128: build 110 s, p50 7.1 ms, recall@5 1.000, @20 0.988
# (Latencies were taken under varying load from other jobs; recall and build time are the deciding figures.)
# A denser graph than the default is needed for recall; 64 neighbours buy nothing over 32. ef_search only
# bounds the first, 64-neighbour list: a query for n neighbours searches with max(ef_search, n).
HNSW_CONFIG = {"space": "cosine", "ef_construction": 200, "ef_search": 128, "max_neighbors": 32}
KINDS_KEY = "rar_tools_kinds"  # collection metadata: the entry kinds a memory holds, e.g. "image,text"
ENTRY_KINDS: tuple[EntryKind, ...] = ("image", "text")
MAX_CACHED_LABELS = 2_000_000


def check_memory_name(name: str) -> str:
    """A memory name: 1-64 of letters, digits, '.', '_' and '-', alphanumeric at both ends."""
    if not isinstance(name, str) or not MEMORY_NAME.fullmatch(name) or ".." in name:
        raise MemoryStoreError(
            f"memory name {describe(name)} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, without '..'"
        )
    return name


def entry_id(memory: str, kind: EntryKind, sha256: str, label: str) -> str:
    """Deterministic id: the same content with the same label in the same memory is one entry."""
    key = "\x00".join((memory, kind, sha256, label)).encode()
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True)
class NewEntry:
    """An entry about to be stored."""

    label: str
    kind: EntryKind
    sha256: str
    embedding: np.ndarray
    source: str | None = None
    image_file: str | None = None
    category: str | None = None
    parent: str | None = None

    def metadata(self, added_at: str) -> dict[str, Any]:
        data = {"label": self.label, "kind": self.kind, "sha256": self.sha256, "added_at": added_at}
        optional = {
            "source": self.source,
            "image_file": self.image_file,
            "category": self.category,
            "parent": self.parent,
        }
        data.update({k: v for k, v in optional.items() if v})
        return data


@dataclass(frozen=True)
class Hit:
    """One nearest neighbour: entry id, cosine similarity and metadata."""

    id: str
    similarity: float
    metadata: dict[str, Any]

    @property
    def label(self) -> str:
        return self.metadata["label"]


@dataclass
class AddOutcome:
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


class MemoryStore:
    """All memories under one data folder: `chroma/` (the index) and `images/` (exemplar copies).

    Opening a store locks its data folder for this process (see `locking`): another process that
    opens the same folder is refused until this one closes the store or exits. Safe to share
    between threads: Chroma locks internally, and writes here hold `write_lock`.
    """

    def __init__(
        self, data_dir: Path, client: Any | None = None, lock_wait_s: float = 3.0, hnsw: dict[str, Any] | None = None
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.hnsw = {**HNSW_CONFIG, **(hnsw or {})}  # for memories created from now on
        self.images_dir = self.data_dir / "images"
        self._lock = lock_data_dir(self.data_dir, lock_wait_s)
        self._owns_client = client is None
        self._closed = False
        try:
            with self._lock.writes:
                if not self._lock.tidied:  # first store since this process took the folder
                    remove_partial_files(self.images_dir)
                    self._lock.tidied = True
            self.client = client if client is not None else open_persistent_client(self.data_dir / "chroma")
            self.max_batch = int(self.client.get_max_batch_size())
        except BaseException:
            unlock_data_dir(self._lock)
            raise
        # id -> (label, kind). An id is a hash of (memory, kind, content, label): this never goes stale.
        self.entry_labels: dict[str, tuple[str, EntryKind]] = {}
        # (memory, k) -> neighbour-list width its label searches needed (retrieval starts there)
        self.widths: dict[tuple[str, int], int] = {}

    @property
    def write_lock(self) -> threading.RLock:
        """Held while writing, so that an exemplar file and the entry pointing at it are written
        together, never interleaved with a removal that deletes unused files (same process)."""
        return self._lock.writes

    def close(self) -> None:
        """Close the Chroma client this store opened and release the data folder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self.client.close()
        unlock_data_dir(self._lock)

    # -- collections -------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of all memories, sorted."""
        names = []
        for collection in self.client.list_collections():
            cname = collection if isinstance(collection, str) else collection.name
            if cname.startswith(COLLECTION_PREFIX):
                names.append(cname[len(COLLECTION_PREFIX) :])
        return sorted(names)

    def exists(self, name: str) -> bool:
        return check_memory_name(name) in self.names()

    def collection(self, name: str, identity: EncoderIdentity | None = None, create: bool = False):
        """The collection of memory `name`; refuses an unknown memory unless `create`, and an
        encoder other than the one that filled it. One lookup by name (listing every collection
        on each call cost more than the search itself in large stores)."""
        from chromadb.errors import NotFoundError

        cname = COLLECTION_PREFIX + check_memory_name(name)
        try:
            collection = self.client.get_collection(cname, embedding_function=None)
        except NotFoundError:
            if not create:
                known = ", ".join(self.names()) or "none yet"
                raise MemoryStoreError(f"memory {name!r} does not exist (memories: {known})") from None
            if identity is None:
                raise MemoryStoreError("creating a memory needs the encoder identity") from None
            return self.client.create_collection(
                cname,
                embedding_function=None,
                configuration={"hnsw": self.hnsw},
                metadata={
                    "rar_tools_schema": SCHEMA_VERSION,
                    "encoder_model": identity.model,
                    "encoder_pretrained": identity.pretrained,
                    "encoder_dim": identity.dim,
                    "created_at": now(),
                },
            )
        if identity is not None:
            check_encoder(name, stored_identity(collection.metadata), identity)
        return collection

    # -- writing -----------------------------------------------------------------------------
    def add(self, name: str, identity: EncoderIdentity, entries: Sequence[NewEntry]) -> AddOutcome:
        """Store entries not already present (idempotent by id), in chunks within Chroma's batch size.

        Exemplar image files must already be written: an entry never points at a missing file.
        """
        with self.write_lock:
            collection = self.collection(name, identity, create=True)
            outcome = AddOutcome()
            ids = [entry_id(name, e.kind, e.sha256, e.label) for e in entries]
            unique = dict(zip(ids, entries))
            for chunk in chunks(list(unique), self.max_batch):
                existing = set(collection.get(ids=chunk, include=[])["ids"])
                outcome.already_present.extend(i for i in chunk if i in existing)
                new = [i for i in chunk if i not in existing]
                if not new:
                    continue
                stamp = now()
                collection.add(
                    ids=new,
                    embeddings=np.stack([unique[i].embedding for i in new]).astype(np.float32),
                    metadatas=[unique[i].metadata(stamp) for i in new],
                )
                outcome.added.extend(new)
            self.entry_labels.update((i, (e.label, e.kind)) for i, e in unique.items())
            self._note_kinds(collection, {unique[i].kind for i in outcome.added})
            return outcome

    def remove(self, name: str, ids: Iterable[str] | None = None, label: str | None = None) -> int:
        """Remove entries by id and/or by label; returns how many were removed. Exemplar files
        no other entry uses are deleted after the entries."""
        with self.write_lock:
            collection = self.collection(name)
            targets: dict[str, dict[str, Any]] = {}
            if ids:
                got = collection.get(ids=list(ids), include=["metadatas"])
                targets.update(zip(got["ids"], got["metadatas"]))
            if label is not None:
                got = collection.get(where={"label": label}, include=["metadatas"])
                targets.update(zip(got["ids"], got["metadatas"]))
            for chunk in chunks(list(targets), self.max_batch):
                collection.delete(ids=chunk)
            for removed in targets:
                self.entry_labels.pop(removed, None)
            self.forget_widths(name)
            if targets:
                self._record_kinds(collection, self._scan_kinds(collection))
            self.delete_unused_files({m["sha256"] for m in targets.values() if m.get("image_file")})
            return len(targets)

    def forget_widths(self, name: str) -> None:
        """After a removal a memory may need narrower lists again."""
        for key in list(self.widths):
            if key[0] == name:
                self.widths.pop(key, None)

    def drop(self, name: str) -> int:
        """Delete a whole memory; returns the number of entries it held."""
        with self.write_lock:
            collection = self.collection(name)
            count = collection.count()
            shas = {m["sha256"] for m in self.all_metadata(collection) if m.get("image_file")}
            self.client.delete_collection(COLLECTION_PREFIX + name)
            self.forget_widths(name)
            self.delete_unused_files(shas)
            return count

    def delete_unused_files(self, shas: set[str]) -> None:
        """Delete the exemplar copies of `shas` that no entry of any memory uses (one query per memory)."""
        from rar_tools.images import stored_image_path

        unused = set(shas)
        for other in self.names():
            if not unused:
                break
            collection = self.collection(other)
            for chunk in chunks(sorted(unused), self.max_batch):
                got = collection.get(where={"sha256": {"$in": chunk}}, include=["metadatas"])
                unused -= {m["sha256"] for m in got["metadatas"] if m}
        for sha in unused:
            stored_image_path(self.images_dir, sha).unlink(missing_ok=True)

    # -- reading -----------------------------------------------------------------------------
    def neighbours(self, collection: Any, embedding: np.ndarray, n: int) -> list[Hit]:
        """Up to `n` nearest entries of any kind, best first, carrying only their label and kind.

        Chroma returns ids and distances alone: building every hit's full metadata cost three times
        the search. Labels and kinds come from `entry_labels`; ids not seen yet are read once.
        """
        result = collection.query(
            query_embeddings=embedding[None, :].astype(np.float32), n_results=n, include=["distances"]
        )
        ids, distances = result["ids"][0], result["distances"][0]
        known = {i: self.entry_labels[i] for i in ids if i in self.entry_labels}
        known.update(self._read_labels(collection, [i for i in ids if i not in known]))
        return [
            Hit(id=i, similarity=1.0 - float(d), metadata={"label": known[i][0], "kind": known[i][1]})
            for i, d in zip(ids, distances)
            if i in known  # an entry removed by another writer since the search
        ]

    def _read_labels(self, collection: Any, ids: list[str]) -> dict[str, tuple[str, EntryKind]]:
        if not ids:
            return {}
        got = collection.get(ids=ids, include=["metadatas"])
        read = {i: (m["label"], m["kind"]) for i, m in zip(got["ids"], got["metadatas"])}
        if len(self.entry_labels) + len(read) > MAX_CACHED_LABELS:
            self.entry_labels.clear()
        self.entry_labels.update(read)
        return read

    def query(
        self,
        name: str,
        identity: EncoderIdentity,
        embedding: np.ndarray,
        kind: EntryKind,
        n: int,
        exclude_labels: Sequence[str] = (),
    ) -> list[Hit]:
        """Up to `n` nearest entries of `kind` in memory `name`, skipping `exclude_labels`, best first."""
        return filtered_query(self.collection(name, identity), embedding, kind, n, exclude_labels)

    def best_exemplar_file(
        self, name: str, identity: EncoderIdentity, embedding: np.ndarray, label: str
    ) -> Path | None:
        """The stored image file of `label`'s exemplar nearest to `embedding`, if it has one."""
        collection = self.collection(name, identity)
        result = collection.query(
            query_embeddings=embedding[None, :].astype(np.float32),
            n_results=1,
            where={"$and": [{"kind": "image"}, {"label": label}]},
            include=["metadatas"],
        )
        for metadata in result["metadatas"][0]:
            path = self.data_dir / metadata["image_file"] if metadata else None
            if path is not None and path.is_file():
                return path
        return None

    def count(self, name: str) -> int:
        """Entries in memory `name`."""
        return self.collection(name).count()

    def kinds(self, name: str) -> set[EntryKind]:
        """The entry kinds memory `name` holds, as recorded in its collection's metadata.

        Asking Chroma with a metadata filter scans every entry (about 0.1 s per 100k entries), so
        adds and removals record the kinds; a memory written before that is scanned once here.
        """
        return self.collection_kinds(self.collection(name))

    def collection_kinds(self, collection: Any) -> set[EntryKind]:
        """`kinds` of a collection already at hand."""
        recorded = (collection.metadata or {}).get(KINDS_KEY)
        if recorded is None:
            return self._record_kinds(collection, self._scan_kinds(collection))
        return parse_kinds(recorded)

    def _scan_kinds(self, collection: Any) -> set[EntryKind]:
        return {kind for kind in ENTRY_KINDS if collection.get(where={"kind": kind}, limit=1, include=[])["ids"]}

    def _note_kinds(self, collection: Any, added: set[EntryKind]) -> None:
        """Record newly added kinds. Another writer adding another new kind at the same instant can
        drop one from the record (Chroma replaces metadata whole); the next add of it restores it."""
        fresh = self.client.get_collection(collection.name, embedding_function=None)
        recorded = (fresh.metadata or {}).get(KINDS_KEY)
        if recorded is None:
            self._record_kinds(fresh, self._scan_kinds(fresh))
        elif not added <= parse_kinds(recorded):
            self._record_kinds(fresh, parse_kinds(recorded) | added)

    def _record_kinds(self, collection: Any, kinds: set[EntryKind]) -> set[EntryKind]:
        fresh = self.client.get_collection(collection.name, embedding_function=None)
        fresh.modify(metadata={**(fresh.metadata or {}), KINDS_KEY: ",".join(sorted(kinds))})
        return kinds

    def summary(self, name: str) -> MemorySummary:
        collection = self.collection(name)
        metadatas = list(self.all_metadata(collection))
        return MemorySummary(
            name=name,
            count=len(metadatas),
            label_counts=dict(Counter(m["label"] for m in metadatas).most_common()),
            kind_counts=dict(Counter(m["kind"] for m in metadatas)),
            encoder=stored_identity(collection.metadata),
        )

    def entries(self, name: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Metadata of the given entry ids that exist."""
        return metadata_by_id(self.collection(name), ids)

    def all_metadata(self, collection: Any) -> Iterable[dict[str, Any]]:
        for _, metadatas in pages(collection):
            yield from metadatas

    def read_labels(self, name: str) -> int:
        """Read every entry's label and kind into `entry_labels`, which searches otherwise fill as
        they meet new entries (about 4 s per 100k entries on 2 cores); returns the entries read."""
        read = 0
        for ids, metadatas in pages(self.collection(name)):
            if len(self.entry_labels) + len(ids) > MAX_CACHED_LABELS:
                break
            self.entry_labels.update((i, (m["label"], m["kind"])) for i, m in zip(ids, metadatas))
            read += len(ids)
        return read


def memory_name(collection: Any) -> str:
    return collection.name[len(COLLECTION_PREFIX) :]


def metadata_by_id(collection: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Metadata of the given entry ids that exist."""
    got = collection.get(ids=list(ids), include=["metadatas"])
    return dict(zip(got["ids"], got["metadatas"]))


def filtered_query(
    collection: Any, embedding: np.ndarray, kind: EntryKind, n: int, exclude_labels: Sequence[str] = ()
) -> list[Hit]:
    """Up to `n` nearest entries of `kind`, skipping `exclude_labels`, best first.

    Filtered: Chroma scans every entry's metadata first (slow in large memories); `neighbours` is
    the fast path."""
    where: dict[str, Any] = {"kind": kind}
    if exclude_labels:
        where = {"$and": [where, {"label": {"$nin": list(exclude_labels)}}]}
    result = collection.query(
        query_embeddings=embedding[None, :].astype(np.float32),
        n_results=n,
        where=where,
        include=["metadatas", "distances"],
    )
    # An entry removed by another thread during the search comes back without metadata: skip it.
    return [
        Hit(id=i, similarity=1.0 - float(d), metadata=m)
        for i, d, m in zip(result["ids"][0], result["distances"][0], result["metadatas"][0])
        if m is not None
    ]


def pages(collection: Any, size: int = 5000) -> Iterable[tuple[list[str], list[dict[str, Any]]]]:
    """Every entry's (ids, metadatas), a page at a time."""
    offset = 0
    while True:
        got = collection.get(include=["metadatas"], limit=size, offset=offset)
        yield got["ids"], got["metadatas"]
        if len(got["ids"]) < size:
            return
        offset += size


def open_persistent_client(path: Path) -> Any:
    """An embedded Chroma client with telemetry off."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path.mkdir(parents=True, exist_ok=True)
    try:
        return chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    except Exception as exc:  # Chroma raises many types for a damaged or foreign folder
        raise MemoryStoreError(f"cannot open the memory index at {str(path)!r}: {type(exc).__name__}: {exc}") from exc


def remove_partial_files(images_dir: Path) -> None:
    """Delete temporary exemplar files a killed process left half-written (they never got an entry)."""
    from rar_tools.images import PARTIAL_PREFIX

    for partial in images_dir.glob(f"*/{PARTIAL_PREFIX}*"):
        partial.unlink(missing_ok=True)
        log.info("removed a half-written exemplar file left by an interrupted add: %s", partial.name)


def open_http_client(url: str, database: str = "default_database") -> Any:
    """A client of a Chroma server (`chroma run`) at `url`, e.g. http://127.0.0.1:8000."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise MemoryStoreError(f"Chroma URL {url!r} is not an http(s)://HOST[:PORT] address")
    port = parsed.port or (443 if parsed.scheme == "https" else 8000)
    try:
        client = chromadb.HttpClient(
            host=parsed.hostname,
            port=port,
            ssl=parsed.scheme == "https",
            database=database,
            settings=ChromaSettings(anonymized_telemetry=False),
        )
        client.heartbeat()
    except Exception as exc:  # connection refused, unknown database, TLS errors...
        raise MemoryStoreError(f"cannot reach the Chroma server at {url} (database {database!r}): {exc}") from exc
    return client


def stored_identity(metadata: dict[str, Any] | None) -> EncoderIdentity | None:
    if not metadata or "encoder_model" not in metadata:
        return None
    return EncoderIdentity(
        model=metadata["encoder_model"], pretrained=metadata["encoder_pretrained"], dim=int(metadata["encoder_dim"])
    )


def parse_kinds(recorded: str) -> set[EntryKind]:
    return {kind for kind in ENTRY_KINDS if kind in recorded.split(",")}


def check_encoder(name: str, stored: EncoderIdentity | None, current: EncoderIdentity) -> None:
    if stored is not None and stored != current:
        raise EncoderMismatchError(
            f"memory {name!r} was filled by CLIP {stored.describe()}, but the loaded encoder is "
            f"{current.describe()}; embeddings of different encoders cannot be compared. "
            "Start the server with the memory's encoder, or use another memory name."
        )


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
