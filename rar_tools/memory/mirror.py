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

import logging
import threading
import uuid
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


class Mirror:
    """One memory's entries in a faiss HNSW graph (inner product on unit vectors = cosine), with
    each row's entry id, label and kind; removed rows are masked. Thread-safe."""

    def __init__(self, identity: EncoderIdentity, marks: Marks) -> None:
        import faiss

        dim = identity.dim
        self.identity = identity
        self.index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.marks = dict(marks)
        self.rows: list[tuple[str, str, EntryKind]] = []
        self.row_of: dict[str, int] = {}
        self.removed: set[int] = set()
        self._lock = threading.Lock()

    def add(self, ids: Sequence[str], labels: Sequence[str], kinds: Sequence[str], embeddings: np.ndarray) -> None:
        """Add entries not present (a removed entry added again gets a new row)."""
        with self._lock:
            new = [n for n, i in enumerate(ids) if i not in self.row_of or self.row_of[i] in self.removed]
            if not new:
                return
            for n in new:
                self.row_of[ids[n]] = len(self.rows)
                self.rows.append((ids[n], labels[n], kinds[n]))  # type: ignore[arg-type]
            self.index.add(np.ascontiguousarray(embeddings[new], dtype=np.float32))

    def remove(self, ids: Sequence[str]) -> None:
        with self._lock:
            self.removed.update(self.row_of[i] for i in ids if i in self.row_of)

    @property
    def worn(self) -> bool:
        """Whether masked rows are so many that a rebuild pays."""
        return len(self.removed) > REBUILD_REMOVED_SHARE * max(len(self.rows), 1)

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
                    entry, label, kind = self.rows[row]
                    hits.append(Hit(entry, float(similarity), label, kind))
            return hits[:n]


class Mirrors:
    """The mirrors of one store's memories: built on first search in the background, kept up to
    date by this store's writes, dropped when another writer's mark moves."""

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
        self._building: set[str] = set()
        self._lock = threading.Lock()

    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list[Hit] | None:
        """The mirror's answer, or None when the memory has no up-to-date mirror of `identity`'s
        embeddings (then a build starts, and the caller asks Chroma, which also gives the errors)."""
        if not self.enabled:
            return None
        mirror = self._mirrors.get(name)
        if mirror is None or mirror.worn or self._read_marks(name) != mirror.marks:
            self._rebuild(name)
            return None
        return mirror.nearest(embedding, n) if mirror.identity == identity else None

    # -- this store's writes (called under the store's write lock) ------------------------------
    def wrote(self, name: str, added: Any = None, removed: Sequence[str] = ()) -> None:
        """Mark a write to memory `name`, and apply it to its mirror: `added` as (ids, labels, kinds,
        embeddings), `removed` entry ids."""
        self._seq += 1
        mirror = self._mirrors.get(name)
        if mirror is not None:
            if added is not None:
                mirror.add(*added)
            mirror.remove(removed)
            mirror.marks[self.writer] = self._seq
        self._write_mark(name, self.writer, self._seq)

    def forget(self, name: str) -> None:
        self._mirrors.pop(name, None)

    # -- building ----------------------------------------------------------------------------------
    def _rebuild(self, name: str) -> None:
        with self._lock:
            if name in self._building:
                return
            self._building.add(name)
        threading.Thread(target=self._build, args=(name,), name=f"mirror-{name}", daemon=True).start()

    def _build(self, name: str) -> None:
        try:
            marks = self._read_marks(name)  # before the read: writes after it move a mark
            identity, pages = self._read_memory(name)
            mirror = Mirror(identity, marks) if identity is not None else None
            for ids, metadatas, embeddings in pages if mirror is not None else ():
                if ids:
                    mirror.add(ids, [m["label"] for m in metadatas], [m["kind"] for m in metadatas], embeddings)
            if mirror is not None:
                self._mirrors[name] = mirror
                log.info("memory %r mirrored in process (%d entries)", name, len(mirror.rows))
        except Exception as exc:  # a dropped memory, a lost server: searches stay on Chroma
            log.info("could not mirror memory %r (%s); searching it in Chroma", name, exc)
            self._mirrors.pop(name, None)
        finally:
            with self._lock:
                self._building.discard(name)
