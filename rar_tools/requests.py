"""One request model per operation: the single source of every argument's type, bound, default and
description.

The Python API builds these from its arguments (`RarTools.retrieve(...)` is
`RetrieveRequest.from_call(...)`), the MCP tools' input schemas are derived from their fields
(`tool_schema.py`), and so are the CLI's flags (`cli_flags.py`). Adding an argument is one edit here
(its type, from `arguments.py`, brings its bounds, check and description along). Light to import.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from rar_tools import limits
from rar_tools.arguments import (
    BoxesFields,
    BoxFields,
    Cli,
    Coordinates,
    DetectorQuery,
    EntryIds,
    ImageArg,
    K,
    Label,
    LabelSelection,
    MemoryName,
    OptionalLevel,
    ProposalFields,
    RankerViewFields,
    RankingFields,
    RankModeArg,
    RetrievalModeArg,
    Surfaces,
    ThumbnailFields,
    ViewFields,
    check_k_value,
)
from rar_tools.errors import (
    DescriptionError,
    ImageInputError,
    MemoryStoreError,
    RarToolsError,
    RegionError,
    SegmentationError,
)
from rar_tools.request_base import ModelName, ProgressFn, Request
from rar_tools.requests_upkeep import ConflictsRequest, DuplicatesRequest, RelabelRequest
from rar_tools.validation import (
    check_candidates,
    check_detector_threshold,
    check_int,
    check_max_boxes,
    check_optional_boxes,
    check_queries,
    check_segment_labels,
    check_views,
)

__all__ = ["ModelName", "ProgressFn", "Request"]  # the base, for the modules importing it from here


# -- the operations --------------------------------------------------------------------------------
class SearchFields(BaseModel):
    """What a retrieval searches: a memory, for an image, k labels, by entry kind."""

    memory: MemoryName
    image: ImageArg
    k: K = limits.DEFAULT_K
    mode: RetrievalModeArg = "auto"


class AddRequest(Request, BoxFields):
    """Store labelled exemplar images, or label texts, in a memory (created on first use).

    Give `images` with their `label`, or `labels` alone. Re-adding the same image with the same
    label stores nothing new. All images are checked first: one bad image stores nothing.
    With `box`, the region of each image is stored (its crop), not the whole image."""

    positional: ClassVar = ("memory", "images", "label", "category", "parent", "skip_unreadable")
    error: ClassVar = MemoryStoreError
    models: ClassVar = frozenset({"encoder"})

    memory: MemoryName
    images: Annotated[
        list[ImageArg] | None,
        Field(max_length=limits.MAX_IMAGES_PER_ADD, description="1-64 images, all of `label`"),
        Cli(positional=True),
    ] = None
    label: Annotated[str | None, Field(max_length=limits.MAX_LABEL_CHARS, description="the label of `images`")] = None
    labels: Annotated[
        list[Label] | None,
        Field(
            max_length=limits.MAX_LABELS_PER_ADD,
            description="label texts to store for zero-shot retrieval (instead of images)",
        ),
        Cli(positional=True),
    ] = None
    category: OptionalLevel = None
    parent: OptionalLevel = None
    skip_unreadable: Annotated[
        bool, Field(description="skip unreadable images instead of storing nothing"), Surfaces("api")
    ] = False
    hierarchy: Annotated[
        list[tuple[str | None, str | None]] | None,
        Field(description="a (category, parent) pair per label, overriding category and parent"),
        Surfaces("api"),
    ] = None

    @model_validator(mode="after")
    def images_or_labels(self) -> AddRequest:
        if (self.images is None) == (self.labels is None):
            raise MemoryStoreError("give either `images` (with `label`) or `labels`, not both and not neither")
        if self.images is not None:
            if not self.label:
                raise MemoryStoreError("`label` is required with `images`: the label every given image shows")
            if not self.images:
                raise ImageInputError("no images given")
        elif self.box is not None:
            raise RegionError("`box` goes with `images`: the region of the images to store")
        elif not self.labels:
            raise MemoryStoreError("no labels given")
        if self.hierarchy is not None and (self.labels is None or len(self.hierarchy) != len(self.labels)):
            raise MemoryStoreError("`hierarchy` needs one (category, parent) pair per label")
        return self


class RetrieveRequest(Request, SearchFields, BoxFields, ViewFields, ThumbnailFields):
    """The k most similar distinct labels for an image or a region of it, with scores, supporting
    entries, and category/parent probabilities."""

    positional: ClassVar = ("memory", "image", "k", "mode")
    error: ClassVar = MemoryStoreError
    models: ClassVar = frozenset({"encoder"})


class RetrieveRegionsRequest(Request, SearchFields, BoxesFields, ViewFields):
    """`retrieve` for many boxes of one image (Python API only)."""

    positional: ClassVar = ("memory", "image", "boxes", "k", "mode")
    error: ClassVar = RegionError
    models: ClassVar = frozenset({"encoder"})


class RankCandidatesRequest(Request, BoxFields, RankerViewFields):
    """Order candidate labels for an image, or a region of it, with the multimodal LLM, best first."""

    positional: ClassVar = ("image", "candidates", "mode", "memory", "exemplars", "icl")
    error: ClassVar = RarToolsError
    models: ClassVar = frozenset({"ranker"})

    image: ImageArg
    candidates: Annotated[
        list[Label],
        Field(
            min_length=limits.MIN_CANDIDATES,
            max_length=limits.MAX_CANDIDATES,
            description="2-50 distinct labels to order",
        ),
        BeforeValidator(check_candidates),
        Cli(flag="--candidates"),
    ]
    mode: RankModeArg = "score"
    memory: Annotated[MemoryName | None, Field(description="memory to take exemplar images from")] = None
    exemplars: Annotated[
        bool,
        Field(description="show each candidate's best stored exemplar image next to its name (needs memory)"),
    ] = False
    icl: Annotated[bool, Field(description="add a worked example of the answer format (generate mode)")] = False

    def needs(self) -> frozenset[ModelName]:
        """The ranker, and the encoder too when exemplar images are looked up."""
        return self.models | ({"encoder"} if self.exemplars else set())

    @model_validator(mode="after")
    def exemplars_need_memory(self) -> RankCandidatesRequest:
        from rar_tools.errors import RankerError

        if self.exemplars and self.memory is None:
            raise RankerError("exemplars=True needs `memory`: the memory whose exemplar images to show")
        return self


class RecognizeRequest(
    Request, RankingFields, BoxFields, ViewFields, RankerViewFields, ThumbnailFields, ProposalFields
):
    """Retrieve the k best candidates from a memory, then rank them with the MLLM (RAR), for an
    image or a region of it."""

    positional: ClassVar = ("memory", "image", "k", "mode", "retrieval_mode", "exemplars", "icl")
    error: ClassVar = MemoryStoreError
    models: ClassVar = frozenset({"encoder", "ranker"})

    memory: MemoryName
    image: ImageArg
    k: Annotated[
        int, Field(ge=1, le=limits.MAX_K, description="candidates to retrieve and rank"), BeforeValidator(check_k_value)
    ] = limits.DEFAULT_K
    retrieval_mode: RetrievalModeArg = "auto"


class RecognizeRegionsRequest(Request, BoxesFields, RankingFields, ViewFields, RankerViewFields, ProposalFields):
    """Recognise many regions of one image in one call (CLIP work batched over all boxes and
    views), e.g. the boxes detect_objects proposed. One result per box, in order."""

    positional: ClassVar = ("memory", "image", "boxes", "k", "mode", "retrieval_mode", "exemplars", "icl")
    error: ClassVar = RegionError
    models: ClassVar = frozenset({"encoder", "ranker"})

    memory: MemoryName
    image: ImageArg
    k: Annotated[
        int,
        Field(ge=1, le=limits.MAX_K, description="candidates to retrieve and rank per box"),
        BeforeValidator(check_k_value),
    ] = limits.DEFAULT_K
    retrieval_mode: RetrievalModeArg = "auto"


class DetectRequest(Request):
    """Box proposals from an open-vocabulary detector (OWLv2), best first, in pixels. Name each
    box at fine grain with recognize_regions. The detector loads on the first call."""

    positional: ClassVar = ("image", "queries", "threshold", "max_boxes")
    error: ClassVar = RarToolsError
    models: ClassVar = frozenset({"detector"})

    image: ImageArg
    queries: Annotated[
        list[DetectorQuery],
        Field(
            min_length=1,
            max_length=limits.MAX_QUERIES,
            description="what to look for, coarse is fine: 'a bird', 'a car'",
        ),
        BeforeValidator(check_queries),
        Cli(flag="--query"),
    ]
    threshold: Annotated[
        float | None,
        Field(ge=0.0, le=1.0, description="minimum detector score (default: the server's)"),
        BeforeValidator(check_detector_threshold),
    ] = None
    max_boxes: Annotated[
        int,
        Field(ge=1, le=limits.MAX_DETECTIONS, description="most boxes returned"),
        BeforeValidator(check_max_boxes),
    ] = limits.DEFAULT_DETECTIONS


class RemoveRequest(Request):
    """Remove entries from a memory by id and/or by label. Unused exemplar copies are deleted."""

    positional: ClassVar = ("memory", "entry_ids", "label")
    error: ClassVar = MemoryStoreError

    memory: MemoryName
    entry_ids: EntryIds = None
    label: LabelSelection = None

    @model_validator(mode="after")
    def something_to_remove(self) -> RemoveRequest:
        if not self.entry_ids and self.label is None:
            raise MemoryStoreError("say what to remove: entry_ids, a label, or both")
        return self


class ListRequest(Request):
    """All memories (or one) with their entry counts per kind and per label, and their CLIP encoder.
    Labels come most first, a page of max_labels at a time: pass a memory's next_cursor back as
    `cursor` (with `memory`) for the next page."""

    positional: ClassVar = ("max_labels", "memory", "cursor")
    error: ClassVar = MemoryStoreError

    max_labels: Annotated[
        int,
        Field(ge=0, le=limits.MAX_LIST_LABELS, description="labels listed per memory"),
        BeforeValidator(lambda v: check_int(v, "max_labels", 0, limits.MAX_LIST_LABELS, MemoryStoreError)),
    ] = limits.DEFAULT_LIST_LABELS
    memory: Annotated[MemoryName | None, Field(description="list this memory only")] = None
    cursor: Annotated[
        str | None,
        Field(max_length=limits.MAX_CURSOR_CHARS, description="next_cursor of the previous page (needs memory)"),
    ] = None

    @model_validator(mode="after")
    def cursor_needs_memory(self) -> ListRequest:
        if self.cursor is not None and self.memory is None:
            raise MemoryStoreError("`cursor` pages one memory's labels: give `memory` too")
        return self


class SegmentRequest(Request, BoxFields):
    """Segment an image without training (CLIP as RNN): one mask per label present in it, for labels
    given in the call or every label of a memory. Labels whose own mask does not convince CLIP leave
    the set, round by round, until it is stable. Each mask comes as COCO RLE in pixels of the whole
    image, with its area, box and score; `overlay` adds a PNG of the masks over the image. `box`, or
    `boxes` (e.g. detect_objects' boxes), segments inside those regions only, one result per region."""

    positional: ClassVar = ("image", "labels", "memory")
    error: ClassVar = SegmentationError
    models: ClassVar = frozenset({"encoder"})

    image: ImageArg
    labels: Annotated[
        list[Label] | None,
        Field(
            min_length=1,
            max_length=limits.MAX_SEGMENT_LABELS,
            description="1-100 distinct labels to look for, e.g. ['Blue Jay', 'branch']",
        ),
        BeforeValidator(check_segment_labels),
    ] = None
    memory: Annotated[
        MemoryName | None, Field(description="segment with every label of this memory (at most 100) instead")
    ] = None
    boxes: Annotated[
        list[Coordinates] | None,
        Field(min_length=1, max_length=limits.MAX_BOXES, description="1-100 regions, each segmented on its own"),
        BeforeValidator(check_optional_boxes),
    ] = None
    overlay: Annotated[
        bool,
        Field(description="also return a PNG of the masks drawn over the image (at most 768 pixels a side)"),
        Surfaces("mcp"),
    ] = False

    @model_validator(mode="after")
    def one_label_source_and_one_region_argument(self) -> SegmentRequest:
        if (self.labels is None) == (self.memory is None):
            raise SegmentationError("give `labels` or `memory` (whose labels to look for), not both and not neither")
        if self.box is not None and self.boxes is not None:
            raise SegmentationError("give `box` or `boxes`, not both")
        return self

    def regions(self) -> list[list[float]] | None:
        """The regions asked for (None: the whole image)."""
        return [self.box] if self.box is not None else self.boxes


class DescribeRegionsRequest(Request, BoxesFields):
    """Describe regions with the multimodal LLM, on the views DynRefer picks (the tight view for
    attributes, context views for the caption): per box a one-sentence caption, a few attributes
    (colour, material, state, count) and a proposed label `phrase|category|parent` (DetCLIPv3's
    format), parsed with fallbacks reported and the raw answer kept. With `memory`, the proposal is
    checked against it: the memory holds the label, a near one (with its similarity), or nothing
    close. On detect_objects' boxes for "an object", this names what the memory lacks: ask the user,
    then add_to_memory the confirmed label."""

    positional: ClassVar = ("image", "boxes", "memory", "views")
    error: ClassVar = DescriptionError
    models: ClassVar = frozenset({"ranker"})

    image: ImageArg
    memory: Annotated[MemoryName | None, Field(description="check each proposed label against this memory")] = None
    views: Annotated[
        int,
        Field(
            ge=1,
            le=limits.MAX_VIEWS,
            description="images the MLLM sees per box: 1 = the tight view; more = plus the DynRefer context views "
            "that differ most from it, the box marked by a red ellipse (multi-image models)",
        ),
        BeforeValidator(check_views),
    ] = limits.DEFAULT_DESCRIBE_VIEWS

    def needs(self) -> frozenset[ModelName]:
        """The ranker, and the encoder too when the proposals are checked against a memory."""
        return self.models | ({"encoder"} if self.memory else set())


class DeleteRequest(Request):
    """Delete a whole memory: every entry, and the stored exemplar copies no other memory uses.
    Cannot be undone."""

    positional: ClassVar = ("memory",)
    error: ClassVar = MemoryStoreError

    memory: MemoryName


OPERATIONS: dict[str, type[Request]] = {
    "add_to_memory": AddRequest,
    "retrieve_candidates": RetrieveRequest,
    "rank_candidates": RankCandidatesRequest,
    "recognize": RecognizeRequest,
    "recognize_regions": RecognizeRegionsRequest,
    "detect_objects": DetectRequest,
    "remove_from_memory": RemoveRequest,
    "list_memories": ListRequest,
    "find_duplicates": DuplicatesRequest,
    "find_conflicts": ConflictsRequest,
    "relabel_entries": RelabelRequest,
    "segment": SegmentRequest,
    "describe_regions": DescribeRegionsRequest,
    "delete_memory": DeleteRequest,
}
"""The MCP tool of each request model (the tool names are public and stay)."""
