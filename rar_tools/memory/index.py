"""The Chroma index: one collection per memory, named `rar-<memory>`, holding each entry's embedding
and metadata, and in the collection's metadata the encoder that filled it and the entry kinds held.

Only this module speaks Chroma; chromadb itself is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from rar_tools.errors import DiskFaultError, EncoderMismatchError, MemoryStoreError
from rar_tools.identity import EncoderIdentity
from rar_tools.limits import ENTRY_KINDS, EntryKind
from rar_tools.memory.entries import NewEntry
from rar_tools.memory.faults import describe_problem, problem_of
from rar_tools.memory.names import chunks, collection_name, memory_of, now

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
PAGE_SIZE = 5000
MAX_SETTLES = 20  # rounds of writing and checking the kinds record under concurrent writers

Collection = Any  # a chromadb Collection (not imported here: chromadb loads only when a client opens)


class ChromaIndex:
    """The collections of one Chroma client (embedded or a server). Safe to share between threads
    (Chroma locks internally); the store serialises writes."""

    def __init__(self, client: Any, hnsw: Mapping[str, Any] | None = None) -> None:
        self.client = client
        self.hnsw = {**HNSW_CONFIG, **(hnsw or {})}  # for memories created from now on
        self.max_batch = int(client.get_max_batch_size())

    # -- collections -------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of all memories, sorted."""
        names = []
        for collection in self.client.list_collections():
            memory = memory_of(collection if isinstance(collection, str) else collection.name)
            if memory is not None:
                names.append(memory)
        return sorted(names)

    def find(self, name: str, identity: EncoderIdentity | None = None) -> Collection | None:
        """The collection of memory `name`, or None; refuses an encoder other than the one that
        filled it. One lookup by name (listing every collection cost more than a search in large stores)."""
        from chromadb.errors import NotFoundError

        try:
            collection = self.client.get_collection(collection_name(name), embedding_function=None)
        except NotFoundError:
            return None
        if identity is not None:
            check_encoder(name, stored_identity(collection.metadata), identity)
        return collection

    def get(self, name: str, identity: EncoderIdentity | None = None) -> Collection:
        """The collection of memory `name`; refuses an unknown memory, naming the memories there are."""
        collection = self.find(name, identity)
        if collection is None:
            known = ", ".join(self.names()) or "none yet"
            raise MemoryStoreError(f"memory {name!r} does not exist (memories: {known})")
        return collection

    def create(self, name: str, identity: EncoderIdentity) -> Collection:
        """A new, empty memory recording `identity`."""
        return self.client.create_collection(
            collection_name(name),
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

    def get_or_create(self, name: str, identity: EncoderIdentity) -> Collection:
        """The collection of memory `name`, created on first use; refuses another encoder."""
        found = self.find(name, identity)
        if found is not None:
            return found
        try:
            return self.create(name, identity)
        except Exception:  # another writer (process) created it first
            found = self.find(name, identity)
            if found is None:
                raise
            return found

    def drop(self, name: str) -> None:
        self.client.delete_collection(collection_name(name))

    def rename(self, name: str, new_name: str) -> None:
        self.get(name).modify(name=collection_name(new_name))

    # -- entries -----------------------------------------------------------------------------
    def add_new(
        self, collection: Collection, entries: Mapping[str, NewEntry], added: list[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """Store the entries (by id) not already present, in chunks within Chroma's batch size;
        returns (ids added, ids already present). `added`, when given, is filled as chunks are stored,
        so that a caller knows what a failed call stored before it failed."""
        added = [] if added is None else added
        present: list[str] = []
        for chunk in chunks(list(entries), self.max_batch):
            existing = set(collection.get(ids=chunk, include=[])["ids"])
            present.extend(i for i in chunk if i in existing)
            new = [i for i in chunk if i not in existing]
            if not new:
                continue
            stamp = now()
            try:
                collection.add(
                    ids=new,
                    embeddings=np.stack([entries[i].embedding for i in new]).astype(np.float32),
                    metadatas=[entries[i].metadata(stamp) for i in new],
                )
            except Exception:  # Chroma may keep a batch it reports failed (logged, then not indexed)
                added.extend(kept_anyway(collection, new))
                raise
            added.extend(new)
        return added, present

    def delete(self, collection: Collection, ids: Sequence[str]) -> None:
        for chunk in chunks(list(ids), self.max_batch):
            collection.delete(ids=chunk)

    def metadata_by_id(self, collection: Collection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Metadata of the given entry ids that exist."""
        if not ids:
            return {}
        got = collection.get(ids=list(ids), include=["metadatas"])
        return {i: m for i, m in zip(got["ids"], got["metadatas"]) if m is not None}

    def with_embeddings(
        self, collection: Collection, ids: list[str] | None = None, where: dict[str, Any] | None = None
    ) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
        """(metadata, embedding) of the entries with `ids` or matching `where`, by id."""
        got = collection.get(ids=ids, where=where, include=["metadatas", "embeddings"])
        return {i: (m, np.asarray(e, np.float32)) for i, m, e in zip(got["ids"], got["metadatas"], got["embeddings"])}

    def metadata_of_label(self, collection: Collection, label: str) -> dict[str, dict[str, Any]]:
        """Metadata of every entry of `label`, by id."""
        got = collection.get(where={"label": label}, include=["metadatas"])
        return dict(zip(got["ids"], got["metadatas"]))

    def pages(self, collection: Collection, size: int = PAGE_SIZE) -> Iterable[tuple[list[str], list[dict[str, Any]]]]:
        """Every entry's (ids, metadatas), a page at a time."""
        for got in self.read_all(collection, ["metadatas"], size):
            yield got["ids"], got["metadatas"]

    def embedding_pages(
        self, collection: Collection, where: dict[str, Any] | None = None, size: int = PAGE_SIZE
    ) -> Iterable[tuple[list[str], list[dict[str, Any]], np.ndarray]]:
        """The (ids, metadatas, embeddings) of every entry (matching `where`, if given), a page at a time."""
        for got in self.read_all(collection, ["metadatas", "embeddings"], size, where):
            yield got["ids"], got["metadatas"], np.asarray(got["embeddings"], dtype=np.float32)

    def read_all(
        self, collection: Collection, include: list[str], size: int, where: dict[str, Any] | None = None
    ) -> Iterable[dict[str, Any]]:
        offset = 0
        while True:
            got = collection.get(where=where, include=include, limit=size, offset=offset)
            yield got
            if len(got["ids"]) < size:
                return
            offset += size

    def shas_in_use(self, shas: set[str]) -> set[str]:
        """Which of the exemplar `shas` an entry of any memory still uses (one query per memory
        and chunk); a memory dropped meanwhile uses none."""
        from chromadb.errors import NotFoundError

        used: set[str] = set()
        for name in self.names():
            if not shas - used:
                break
            try:
                collection = self.client.get_collection(collection_name(name), embedding_function=None)
                for chunk in chunks(sorted(shas - used), self.max_batch):
                    got = collection.get(where={"sha256": {"$in": chunk}}, include=["metadatas"])
                    used |= {m["sha256"] for m in got["metadatas"] if m}
            except NotFoundError:
                continue
        return used

    # -- searching ---------------------------------------------------------------------------
    def nearest(self, collection: Collection, embedding: np.ndarray, n: int) -> list[tuple[str, float]]:
        """(id, cosine similarity) of up to `n` nearest entries, best first: ids and distances only
        (building every hit's metadata cost three times the search)."""
        result = collection.query(
            query_embeddings=embedding[None, :].astype(np.float32), n_results=n, include=["distances"]
        )
        return [(i, 1.0 - float(d)) for i, d in zip(result["ids"][0], result["distances"][0])]

    def nearest_where(
        self, collection: Collection, embedding: np.ndarray, n: int, where: dict[str, Any]
    ) -> list[tuple[str, float, dict[str, Any]]]:
        """(id, similarity, metadata) of up to `n` nearest entries matching `where`, best first.

        Filtered: Chroma scans every entry's metadata first (slow in large memories). An entry
        removed by another thread during the search comes back without metadata: it is skipped."""
        result = collection.query(
            query_embeddings=embedding[None, :].astype(np.float32),
            n_results=n,
            where=where,
            include=["metadatas", "distances"],
        )
        return [
            (i, 1.0 - float(d), m)
            for i, d, m in zip(result["ids"][0], result["distances"][0], result["metadatas"][0])
            if m is not None
        ]

    # -- the kinds record --------------------------------------------------------------------
    def kinds(self, collection: Collection) -> set[EntryKind]:
        """The entry kinds a collection holds, as recorded in its metadata.

        Asking Chroma with a metadata filter scans every entry (about 0.1 s per 100k entries), so
        adds and removals record the kinds; a memory written before that is scanned once here.
        """
        recorded = (collection.metadata or {}).get(KINDS_KEY)
        if recorded is None:
            return self.settle_kinds(collection)
        return parse_kinds(recorded)

    def scan_kinds(self, collection: Collection) -> set[EntryKind]:
        return {kind for kind in ENTRY_KINDS if collection.get(where={"kind": kind}, limit=1, include=[])["ids"]}

    def note_kinds(self, collection: Collection, added: set[EntryKind]) -> None:
        """Record newly added kinds: nothing to write when the record already lists them."""
        fresh = self.client.get_collection(collection.name, embedding_function=None)
        recorded = (fresh.metadata or {}).get(KINDS_KEY)
        if recorded is None or not added <= parse_kinds(recorded):
            self.settle_kinds(collection)

    def settle_kinds(self, collection: Collection) -> set[EntryKind]:
        """Make the kinds record say what the memory holds; returns the kinds.

        Chroma replaces collection metadata whole, so two writers recording different new kinds at
        once could each drop the other's. So a writer that changes kinds writes what a scan finds,
        then scans again and re-reads the record, until the two agree: the last write of the record
        is followed by its writer's check, which saw every entry written before it. (A writer whose
        kinds the record already lists writes nothing: any later write of the record is checked
        against a scan that sees its entries.)"""
        kinds = self.scan_kinds(collection)
        for _ in range(MAX_SETTLES):
            fresh = self.client.get_collection(collection.name, embedding_function=None)
            recorded = (fresh.metadata or {}).get(KINDS_KEY)
            if recorded is not None and parse_kinds(recorded) == kinds:
                break
            fresh.modify(metadata={**(fresh.metadata or {}), KINDS_KEY: ",".join(sorted(kinds))})
            kinds = self.scan_kinds(collection)
        return kinds


def kept_anyway(collection: Collection, ids: list[str]) -> list[str]:
    """Those of `ids` the collection holds after an add of them failed (none if it cannot be read)."""
    try:
        held = set(collection.get(ids=ids, include=[])["ids"])
    except Exception:  # the failure may be the server's
        return []
    return [i for i in ids if i in held]


def parse_kinds(recorded: str) -> set[EntryKind]:
    return {kind for kind in ENTRY_KINDS if kind in recorded.split(",")}


def stored_identity(metadata: Mapping[str, Any] | None) -> EncoderIdentity | None:
    """The encoder a collection's metadata records, if any."""
    if not metadata or "encoder_model" not in metadata:
        return None
    return EncoderIdentity(
        model=metadata["encoder_model"], pretrained=metadata["encoder_pretrained"], dim=int(metadata["encoder_dim"])
    )


def check_encoder(name: str, stored: EncoderIdentity | None, current: EncoderIdentity) -> None:
    if stored is not None and stored != current:
        raise EncoderMismatchError(
            f"memory {name!r} was filled by CLIP {stored.describe()}, but the loaded encoder is "
            f"{current.describe()}; embeddings of different encoders cannot be compared. "
            "Start the server with the memory's encoder, use another memory name, or re-encode the memory "
            f"for the loaded encoder: `rar-tools reembed {name} --clip-model MODEL [--clip-pretrained TAG]`."
        )


# -- clients ----------------------------------------------------------------------------------
def open_persistent_client(path: Any) -> Any:
    """An embedded Chroma client on the folder `path` (a Path), telemetry off. A failure names a
    read-only or full data folder when that is the cause."""
    import chromadb
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings as ChromaSettings

    try:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    except Exception as exc:  # Chroma raises many types for a damaged, foreign or unwritable folder
        # Chroma keeps the half-made client of a failed open; the next open in this process would reuse
        # it and fail with "'RustBindingsAPI' object has no attribute 'bindings'" instead of the cause.
        SharedSystemClient.clear_system_cache()
        problem = problem_of(exc)
        message = f"cannot open the memory index at {str(path)!r}: {type(exc).__name__}: {exc}"
        if problem is not None:
            raise DiskFaultError(f"{describe_problem(problem, path.parent)}: {message}") from exc
        raise MemoryStoreError(message) from exc


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
    except Exception as exc:  # a bad setting or database name
        raise MemoryStoreError(f"cannot reach the Chroma server at {url} (database {database!r}): {exc}") from exc
    try:
        client.heartbeat()
    except Exception as exc:  # connection refused, TLS errors...
        close_http_client(client)
        raise MemoryStoreError(f"cannot reach the Chroma server at {url} (database {database!r}): {exc}") from exc
    return client


def close_http_client(client: Any) -> None:
    """Close a Chroma server's client and its connections. chromadb 1.5's `close` releases the client
    but leaves its HTTP connection pools open, its own and its internal admin client's
    (chroma-core/chroma#2702), so those are closed here too, where this chromadb has them."""
    client.close()
    for owner in (client, getattr(client, "_admin_client", None)):
        session = getattr(getattr(owner, "_server", None), "_session", None)
        if session is not None:
            session.close()
