"""Result models of the upkeep operations (export, import, re-embed, duplicates, conflicts, relabel)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rar_tools.schemas import EncoderInfo


class ExportResult(BaseModel):
    memory: str
    path: str = Field(description="the archive written")
    entries: int
    images: int = Field(description="exemplar files in the archive")
    bytes: int = Field(description="size of the archive file")
    encoder: EncoderInfo
    message: str


class ImportResult(BaseModel):
    memory: str
    added: int = Field(description="entries newly stored")
    already_present: int = Field(description="entries that were already stored (importing twice stores nothing)")
    count: int = Field(description="entries in the memory afterwards")
    encoder: EncoderInfo
    message: str


class ReembedResult(BaseModel):
    memory: str = Field(description="the memory re-encoded")
    written_to: str = Field(description="the memory now holding the new embeddings")
    encoder: EncoderInfo = Field(description="the encoder of the new embeddings")
    encoded: int = Field(description="entries encoded by this run")
    already_done: int = Field(description="entries an interrupted run had already encoded")
    count: int
    replaced: bool = Field(description="whether the old memory was replaced (no --as)")
    message: str


class DuplicatePair(BaseModel):
    first_id: str
    first_label: str
    second_id: str
    second_label: str
    similarity: float = Field(description="cosine similarity of the two exemplars")
    same_label: bool


class DuplicatesResult(BaseModel):
    memory: str
    threshold: float
    scanned: int = Field(description="exemplar images compared, all pairs")
    pairs: list[DuplicatePair] = Field(description="most similar first")
    truncated: bool = Field(description="more pairs reach the threshold than max_results")


class Conflict(BaseModel):
    entry_id: str
    label: str
    suggested_label: str = Field(description="the label most of its nearest exemplars carry")
    share: float = Field(description="share of its nearest exemplars carrying the suggested label")
    neighbour_labels: list[str] = Field(description="labels of its nearest exemplars, nearest first")


class ConflictsResult(BaseModel):
    memory: str
    neighbours: int
    scanned: int = Field(description="exemplar images looked at")
    conflicts: list[Conflict] = Field(description="largest share first")
    truncated: bool


class RelabelResult(BaseModel):
    memory: str
    label: str = Field(description="the label the entries now carry")
    moved: int = Field(description="entries moved to the label (0 when they already carried it)")
    entry_ids: list[str] = Field(description="the moved entries' new ids")
    not_found: list[str] = Field(description="given entry ids the memory does not hold")
    count: int = Field(description="entries in the memory afterwards")
