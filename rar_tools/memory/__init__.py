"""The memory: named Chroma collections of CLIP embeddings with their labels, and the exemplar
files their image entries point at, owned together by one `MemoryStore`.

- `store`: `MemoryStore`, the one object callers use; its writes in `writes`, its reads and
  searches in `reads`, their shared state in `state`.
- `index`: the Chroma collections (the only module that speaks Chroma).
- `files`: the content-addressed exemplar copies.
- `entries`: the typed values (`NewEntry`, `ExemplarImage`, `Entry`, `Hit`, ...).
- `faults`: read-only and full data folders, found before a write and named in a failed one.
- `snapshot`: opening the embedded index in place, or from a read-only copy when it cannot be written.
- `orphans`: collecting exemplar files no entry references, in the background after opening.
- `catalogue`: per-label counts kept at write time, and the write marks of `mirror`'s in-process indexes.
- `archive`, `archive_reader`, `transfer`: `.rar-memory` export and import; `moves`: relabel and
  replace; `curation`: near duplicates and likely mislabelled exemplars; `pages`: paged label listings.

Importing this package imports neither chromadb nor torch: chromadb loads when a store opens a client.
"""

from rar_tools.identity import EncoderIdentity
from rar_tools.limits import ENTRY_KINDS, MEMORY_NAME, EntryKind
from rar_tools.memory.entries import AddOutcome, Entry, ExemplarImage, Hit, MemorySummary, NewEntry
from rar_tools.memory.index import HNSW_CONFIG, KINDS_KEY, open_http_client, open_persistent_client
from rar_tools.memory.names import COLLECTION_PREFIX, entry_id
from rar_tools.memory.store import MemoryStore
from rar_tools.validation import check_memory_name

__all__ = [
    "COLLECTION_PREFIX",
    "ENTRY_KINDS",
    "HNSW_CONFIG",
    "KINDS_KEY",
    "MEMORY_NAME",
    "AddOutcome",
    "EncoderIdentity",
    "Entry",
    "EntryKind",
    "ExemplarImage",
    "Hit",
    "MemoryStore",
    "MemorySummary",
    "NewEntry",
    "check_memory_name",
    "entry_id",
    "open_http_client",
    "open_persistent_client",
]
