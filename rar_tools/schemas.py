"""Result models shared by the Python API, the MCP tools (output schemas) and the CLI (--json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from rar_tools.vision_schemas import RegionDescription

if TYPE_CHECKING:
    from rar_tools.hierarchy import FineLabel, GroupProbability


class EncoderInfo(BaseModel):
    model: str = Field(description="open_clip model name, hf-hub: id or local-dir: folder")
    pretrained: str = Field(description="weights tag, 'model-folder' or 'random-init'")
    dim: int = Field(description="embedding dimension")


class Candidate(BaseModel):
    label: str
    score: float = Field(
        description="ranking score: best (or top-3 summed) cosine similarity; "
        "in auto mode over both kinds, the fused probability"
    )
    probability: float = Field(description="share among the returned candidates (softmax of CLIP-scaled similarities)")
    image_similarity: float | None = Field(
        None, description="best cosine similarity to an exemplar image of this label"
    )
    text_similarity: float | None = Field(None, description="cosine similarity to the label text")
    support: int = Field(description="retrieved entries carrying this label")
    entry_ids: list[str] = Field(description="ids of those entries, best first (at most 10)")
    category: str | None = None
    parent: str | None = None


class LevelScore(BaseModel):
    level: Literal["label", "category", "parent"]
    name: str
    probability: float = Field(description="summed probability of the candidate labels under this name")
    labels: list[str] = Field(description="those candidate labels")

    @classmethod
    def of(cls, group: GroupProbability) -> LevelScore:
        return cls(level=group.level, name=group.name, probability=group.probability, labels=list(group.labels))


class Levels(BaseModel):
    """Coarser levels of the candidates (from their `category` / `parent` metadata)."""

    categories: list[LevelScore] = Field(default_factory=list, description="categories, most probable first")
    parents: list[LevelScore] = Field(default_factory=list, description="parents, most probable first")
    answer: LevelScore | None = Field(
        None,
        description="the best name at the finest level (label, else category, else parent) whose probability "
        "reaches min_confidence; None when no level does",
    )

    @classmethod
    def of(cls, fine: Sequence[FineLabel], min_confidence: float) -> Levels:
        """Category and parent probabilities of candidates, and the finest level sure enough."""
        from rar_tools.hierarchy import finest_confident, group_probabilities

        answer = finest_confident(fine, min_confidence)
        return cls(
            categories=[LevelScore.of(g) for g in group_probabilities(fine, "category")],
            parents=[LevelScore.of(g) for g in group_probabilities(fine, "parent")],
            answer=LevelScore.of(answer) if answer else None,
        )


class RegionInfo(BaseModel):
    box: list[float] = Field(description="the box in pixels (x1, y1, x2, y2), clipped to the image")
    view_steps: list[float] = Field(description="DynRefer t of each view embedded (0: the tight view)")
    view_weights: list[float] = Field(description="fusion weight of each view")
    filtered_out: list[str] = Field(default_factory=list, description="labels the CaR filter dropped")
    filter_rounds: int = Field(0, description="CaR filter rounds (0: filter off)")


class RetrieveResult(BaseModel):
    memory: str
    mode: Literal["auto", "image", "text"]
    kinds_searched: list[Literal["image", "text"]]
    k: int
    candidates: list[Candidate] = Field(description="distinct labels, best first")
    note: str | None = Field(None, description="why fewer than k candidates came back, if they did")
    levels: Levels = Field(default_factory=Levels, description="category and parent probabilities")
    region: RegionInfo | None = Field(None, description="the region searched, when a box was given")
    timings: dict[str, float] = Field(description="seconds per stage")


class SkippedInput(BaseModel):
    source: str
    reason: str


class AddResult(BaseModel):
    memory: str
    kind: Literal["image", "text"]
    added: int = Field(description="entries newly stored")
    already_present: int = Field(description="entries that were already stored (adds are idempotent)")
    entry_ids: list[str] = Field(description="ids of the new and already present entries (at most 1000)")
    count: int = Field(description="entries in the memory afterwards")
    skipped: list[SkippedInput] = Field(default_factory=list, description="inputs skipped as unreadable")
    created: bool = Field(False, description="whether this call created the memory")
    message: str


class MemoryInfo(BaseModel):
    name: str
    count: int
    kinds: dict[str, int] = Field(description="entries per kind: image exemplars, label texts")
    labels_total: int
    labels: dict[str, int] = Field(description="entries per label, most first (truncated to max_labels)")
    labels_truncated: bool
    encoder: EncoderInfo | None
    next_cursor: str | None = Field(None, description="pass as `cursor` (with `memory`) for the next page of labels")
    labels_after: int = Field(0, description="labels after this page")


class MemoryList(BaseModel):
    data_dir: str
    memories: list[MemoryInfo]


class RemoveResult(BaseModel):
    memory: str
    removed: int
    count: int = Field(description="entries left in the memory")


class RankedCandidate(BaseModel):
    label: str
    score: float = Field(description="probability (score mode) or normalised 1/rank weight (generate mode)")


class RankOutput(BaseModel):
    best: str = Field(description="the top-ranked label")
    ranked: list[RankedCandidate] = Field(description="every candidate exactly once, best first")
    mode: Literal["score", "generate"]
    fallback: Literal["none", "partial", "full"] = Field(
        description="generate mode: how much of the order had to be filled in from the given order "
        "(none: the model ranked every candidate; full: its answer could not be used)"
    )
    raw_text: str | None = Field(None, description="the model's answer in generate mode")
    ranker: str = Field(description="the backend and model that ranked")
    exemplars_shown: int = Field(0, description="stored exemplar images shown next to candidate names")
    timings: dict[str, float]


class RecognizeResult(BaseModel):
    label: str | None = Field(description="the recognised label, or None when the memory offered none")
    retrieval: RetrieveResult
    ranking: RankOutput | None = Field(None, description="absent when fewer than two candidates were retrieved")
    levels: Levels = Field(
        default_factory=Levels, description="category and parent probabilities from the final stage's label scores"
    )
    note: str | None = None
    timings: dict[str, float]
    proposal: RegionDescription | None = Field(
        None,
        description="with propose_when_unsure, when unsure: the MLLM's description of the region and the label it "
        "proposes, checked against the memory (ask the user before add_to_memory)",
    )


class RegionsResult(BaseModel):
    memory: str
    image_size: list[int] = Field(description="width and height of the image in pixels")
    regions: list[RecognizeResult] = Field(description="one result per box, in the order given")
    timings: dict[str, float] = Field(description="seconds per stage for all boxes together")


class Detection(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the image")
    score: float = Field(description="detector confidence (0..1)")
    query: str = Field(description="the text query the box matched best")


class DetectResult(BaseModel):
    detections: list[Detection] = Field(description="boxes, best first; pass them to recognize_regions")
    image_size: list[int] = Field(description="width and height of the image in pixels")
    detector: str
    timings: dict[str, float]


class DeleteResult(BaseModel):
    memory: str
    removed: int = Field(description="entries the memory held")
    message: str
