"""Request models of the upkeep operations: moving memories (export, import, re-embed) and tidying
them (near duplicates, likely mislabelled exemplars, relabelling). Registered with the others in
`requests.OPERATIONS` (the MCP tools) where an agent helping a user would call them."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from rar_tools import limits
from rar_tools.arguments import Cli, EntryIds, Label, LabelSelection, MemoryName, OptionalLevel
from rar_tools.errors import MemoryStoreError
from rar_tools.request_base import Request

ArchivePath = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_PATH_CHARS, description="a .rar-memory archive file on this machine"),
]
NewName = Annotated[
    MemoryName | None,
    Field(description="the memory to write (default: the same name)"),
    Cli(flag="--as"),
]
MaxResults = Annotated[int, Field(ge=1, le=limits.MAX_CURATION_RESULTS, description="most results returned")]


class ExportRequest(Request):
    """Write a memory, with its exemplar images, to a .rar-memory archive (docs/portability.md)."""

    positional: ClassVar = ("memory", "path")
    error: ClassVar = MemoryStoreError

    memory: MemoryName
    path: ArchivePath


class ImportRequest(Request):
    """Store the memory of a .rar-memory archive, after checking all of it; importing twice
    stores nothing new."""

    positional: ClassVar = ("path", "as_name")
    error: ClassVar = MemoryStoreError

    path: ArchivePath
    as_name: Annotated[
        MemoryName | None,
        Field(description="store it under this memory name (default: the archive's)"),
        Cli(flag="--as"),
    ] = None


class ReembedRequest(Request):
    """Re-encode a memory with the loaded CLIP encoder (--clip-model / --clip-pretrained): image
    entries from their stored exemplar copies, label texts with the templates setting. Written as
    a new memory, or replacing the old one only once complete; resumable after a kill."""

    positional: ClassVar = ("memory", "as_name")
    error: ClassVar = MemoryStoreError
    models: ClassVar = frozenset({"encoder"})

    memory: MemoryName
    as_name: NewName = None


class DuplicatesRequest(Request):
    """Near-identical exemplar images of a memory, within and across labels: pairs whose cosine
    similarity reaches `threshold`, most similar first."""

    positional: ClassVar = ("memory", "threshold", "max_results")
    error: ClassVar = MemoryStoreError

    memory: MemoryName
    threshold: Annotated[
        float, Field(ge=0.5, le=1.0, description="cosine similarity from which two exemplars count as duplicates")
    ] = limits.DEFAULT_DUPLICATE_THRESHOLD
    max_results: MaxResults = limits.DEFAULT_CURATION_RESULTS


class ConflictsRequest(Request):
    """Exemplar images whose nearest exemplars mostly carry one other label: likely mislabelled,
    with that label suggested. Most clear-cut first."""

    positional: ClassVar = ("memory", "neighbours", "max_results")
    error: ClassVar = MemoryStoreError

    memory: MemoryName
    neighbours: Annotated[
        int, Field(ge=1, le=limits.MAX_K, description="nearest exemplars looked at for each exemplar")
    ] = limits.DEFAULT_K
    min_similarity: Annotated[
        float, Field(ge=0.0, le=1.0, description="neighbours less similar than this (cosine) do not count")
    ] = limits.DEFAULT_CONFLICT_SIMILARITY
    max_results: MaxResults = limits.DEFAULT_CURATION_RESULTS


class RelabelRequest(Request):
    """Move entries to another label (by id and/or every entry of `label`): their ids are derived
    anew, exemplar files and embeddings kept. Relabelling again changes nothing."""

    positional: ClassVar = ("memory", "to_label", "entry_ids", "label")
    error: ClassVar = MemoryStoreError

    memory: MemoryName
    to_label: Annotated[Label, Cli(flag="--to")]
    entry_ids: EntryIds = None
    label: LabelSelection = None
    category: OptionalLevel = None
    parent: OptionalLevel = None

    @model_validator(mode="after")
    def something_to_move(self) -> RelabelRequest:
        if not self.entry_ids and self.label is None:
            raise MemoryStoreError("say what to relabel: entry_ids, a label, or both")
        return self
