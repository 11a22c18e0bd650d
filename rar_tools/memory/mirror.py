"""In-process copies of memories' indexes (faiss HNSW), mirrored from Chroma, the store of record.

A Chroma query pays for its client, its bindings and a SQLite lookup of the ids on top of the graph
search (docs/portability.md#retrieval-speed has the profile); a faiss graph searched in process
answers the same nearest-neighbour question in a fraction of that. A mirror is built in a
background thread from one full read of the memory; until it is ready, and whenever it may be
stale, searches go to Chroma as before.

Staying consistent without transactions: every store marks each write to a memory in the catalogue
(`Catalogue.mark_write`: its own writer id, a sequence number). A mirror remembers the marks it
reflects. This store's own writes update its mirrors (under the write lock) and their remembered
mark; a search first reads the memory's marks (one small read), and a mark that moved otherwise
(another store in this process, another process on a shared Chroma server, a dropped memory)
sends that search to Chroma and the mirror to be rebuilt. Removed entries are masked until a
rebuild, which comes once they are a tenth of the mirror.
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind
from rar_tools.memory.entries import Hit

log = logging.getLogger(__name__)

M = 32  # graph neighbours, as the Chroma collections (index.HNSW_CONFIG)
EF_CONSTRUCTION = 200
EF_SEARCH = 128
REBUILD_REMOVED_SHARE = 0.1

Marks = dict[str, int]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


Row = tuple[str, str, EntryKind, "str | None", "str | None"]  # entry id, label, kind, category, parent


class Mirror:
    """One memory's entries in a faiss HNSW graph (inner product on unit vectors = cosine), with
    each row's entry id, label, kind, category and parent; removed rows are masked. Thread-safe."""

    def __init__(self, identity: EncoderIdentity, marks: Marks) -> None:
        import faiss

        self.identity = identity
        self.index = faiss.IndexHNSWFlat(identity.dim, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.marks = dict(marks)
        self.rows: list[Row] = []
        self.row_of: dict[str, int] = {}
        self.removed: set[int] = set()
        self.kind_counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, metadatas: Sequence[dict[str, Any]], ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Add entries not present (a removed entry added again gets a new row)."""
        with self._lock:
            new = [n for n, i in enumerate(ids) if i not in self.row_of or self.row_of[i] in self.removed]
            for n in new:
                m = metadatas[n]
                self.row_of[ids[n]] = len(self.rows)
                self.rows.append((ids[n], m["label"], m["kind"], m.get("category"), m.get("parent")))
                self.kind_counts[m["kind"]] += 1
            if new:
                self.index.add(np.ascontiguousarray(embeddings[new], dtype=np.float32))

    def remove(self, ids: Sequence[str]) -> None:
        with self._lock:
            for row in {self.row_of[i] for i in ids if i in self.row_of} - self.removed:
                self.removed.add(row)
                self.kind_counts[self.rows[row][2]] -= 1

    @property
    def worn(self) -> bool:
        """Whether masked rows are so many that a rebuild pays."""
        return len(self.removed) > REBUILD_REMOVED_SHARE * max(len(self.rows), 1)

    def kinds(self) -> set[EntryKind]:
        return {kind for kind, count in self.kind_counts.items() if count > 0}  # type: ignore[misc]

    def levels(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """(category, parent) of each of `ids` the mirror holds."""
        rows = [self.row_of.get(i) for i in ids]
        return {i: self.rows[row][3:5] for i, row in zip(ids, rows) if row is not None and row not in self.removed}

    def nearest(self, embedding: np.ndarray, n: int) -> list[Hit]:
        """Up to `n` nearest live entries, best first."""
        with self._lock:
            wanted = min(n + len(self.removed), len(self.rows))
            if wanted == 0:
                return []
            self.index.hnsw.efSearch = max(EF_SEARCH, wanted)
            similarities, rows = self.index.search(embedding[None, :].astype(np.float32), wanted)
            hits = []
            for similarity, row in zip(similarities[0], rows[0]):
                if row >= 0 and row not in self.removed:
                    entry, label, kind = self.rows[row][:3]
                    hits.append(Hit(entry, float(similarity), label, kind))
            return hits[:n]


class Mirrors:
    """The mirrors of one store's memories: built on first search in the background, kept up to
    date by this store's writes, dropped when another writer's mark moves. Marks are read and
    written by the given functions: the catalogue's for a shared Chroma server, a dict shared by
    the process's stores for an embedded folder (no other process can write it: the folder lock)."""

    def __init__(
        self,
        read_marks: Callable[[str], Marks],
        write_mark: Callable[[str, str, int], None],
        read_memory: Callable[[str], Any],
        enabled: bool = True,
    ) -> None:
        self.writer = uuid.uuid4().hex
        self.enabled = enabled and faiss_available()
        self._read_marks, self._write_mark, self._read_memory = read_marks, write_mark, read_memory
        self._seq = 0
        self._mirrors: dict[str, Mirror] = {}
        self._building: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        if self.enabled:
            atexit.register(self.close)  # a build is never cut off inside a Chroma call at interpreter exit

    def current(self, name: str, identity: EncoderIdentity | None = None) -> Mirror | None:
        """The mirror of memory `name` if it reflects every write (and holds `identity`'s
        embeddings); else None, and a build starts: the caller asks Chroma, which also gives the errors."""
        if not self.enabled:
            return None
        mirror = self._mirrors.get(name)
        if mirror is None or mirror.worn or self._read_marks(name) != mirror.marks:
            self._rebuild(name)
            return None
        return mirror if identity is None or mirror.identity == identity else None

    def marks(self, name: str) -> Marks:
        """The write marks of memory `name` (every writer's last write)."""
        return self._read_marks(name)

    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list[Hit] | None:
        mirror = self.current(name, identity)
        return None if mirror is None else mirror.nearest(embedding, n)

    # -- this store's writes (called under the store's write lock) ------------------------------
    def wrote(self, name: str, added: Any = None, removed: Sequence[str] = ()) -> None:
        """Mark a write to memory `name`, and apply it to its mirror: `added` as (metadatas, ids,
        embeddings), `removed` entry ids."""
        self._seq += 1
        mirror = self._mirrors.get(name)
        if mirror is not None:
            if added is not None:
                mirror.add(*added)
            mirror.remove(removed)
            mirror.marks[self.writer] = self._seq
        self._write_mark(name, self.writer, self._seq)

    def invalidate(self, name: str) -> None:
        """A write to memory `name` failed part-way: forget its mirror (rebuilt from Chroma by the
        next search) and move this store's mark, so that other stores rebuild theirs too."""
        self._mirrors.pop(name, None)
        self._seq += 1
        try:
            self._write_mark(name, self.writer, self._seq)
        except Exception as exc:  # the failure may be the server's: its next write moves the mark
            log.warning("could not mark the failed write to memory %r for other stores: %s", name, exc)

    def dropped(self, name: str) -> None:
        """Memory `name` was dropped (or replaced): forget its mirror, and mark it for others."""
        self._mirrors.pop(name, None)
        self._seq += 1
        self._write_mark(name, self.writer, self._seq)

    # -- building ----------------------------------------------------------------------------------
    def _rebuild(self, name: str) -> None:
        with self._lock:
            if name in self._building or self._closing.is_set():
                return
            thread = threading.Thread(target=self._build, args=(name,), name=f"mirror-{name}", daemon=True)
            self._building[name] = thread
        thread.start()

    def close(self) -> None:
        """Stop building mirrors: builds in progress end after the page in hand (the store is
        closing, or the process exiting); waits for them."""
        self._closing.set()
        with self._lock:
            threads = list(self._building.values())
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
        atexit.unregister(self.close)

    def _build(self, name: str) -> None:
        try:
            marks = self._read_marks(name)  # before the read: writes after it move a mark
            identity, pages = self._read_memory(name)
            mirror = Mirror(identity, marks) if identity is not None else None
            for ids, metadatas, embeddings in pages if mirror is not None else ():
                if self._closing.is_set():
                    return
                if ids:
                    mirror.add(metadatas, ids, embeddings)
            if mirror is not None and not self._closing.is_set():
                self._mirrors[name] = mirror
                log.info("memory %r mirrored in process (%d entries)", name, len(mirror.rows))
        except Exception as exc:  # a dropped memory, a lost server: searches stay on Chroma
            log.info("could not mirror memory %r (%s); searching it in Chroma", name, exc)
            self._mirrors.pop(name, None)
        finally:
            with self._lock:
                self._building.pop(name, None)


class LocalMarks:
    """Write marks of an embedded folder's memories, shared by the process's stores of it."""

    def __init__(self, shared: dict[str, Marks]) -> None:
        self.shared = shared

    def read(self, name: str) -> Marks:
        return dict(self.shared.get(name, {}))

    def write(self, name: str, writer: str, seq: int) -> None:
        self.shared.setdefault(name, {})[writer] = seq
