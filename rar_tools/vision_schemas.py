"""Result models of the segmentation and description tools (shared by the API, the MCP output schemas
and the CLI's --json, like `schemas.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from rar_tools.limits import EntryKind, Fallback


# -- segment -----------------------------------------------------------------------------------------
class MaskRle(BaseModel):
    """A COCO run-length encoding (pycocotools' compressed string form)."""

    size: list[int] = Field(description="height, width of the mask (the whole image)")
    counts: str = Field(description="column-major runs of 0 and 1, starting with 0, compressed as pycocotools does")


class LabelMask(BaseModel):
    label: str
    score: float = Field(
        description="the mask classifier's probability of the label on its final mask (softmax over the "
        "labels left, averaged over the three visual prompts)"
    )
    area: int = Field(description="pixels in the mask")
    box: list[float] | None = Field(description="x1, y1, x2, y2 around the mask, in pixels; None when it is empty")
    rle: MaskRle


class SegmentedRegion(BaseModel):
    box: list[float] = Field(description="the region segmented, in pixels (the whole image without boxes)")
    masks: list[LabelMask] = Field(description="one per label left when the set was stable, best score first")
    dropped: list[list[str]] = Field(description="the labels dropped in each round, round by round")
    rounds: int = Field(description="rounds run (the last one dropped nothing, unless the round limit stopped it)")


class SegmentResult(BaseModel):
    image_size: list[int] = Field(description="width and height of the image in pixels")
    labels: list[str] = Field(description="the labels looked for")
    label_source: Literal["call", "memory"]
    regions: list[SegmentedRegion] = Field(description="one per box given, in order (one for the whole image)")
    refinement: str = Field(description="the post-processing that sharpened the masks")
    timings: dict[str, float]


# -- describe_regions -----------------------------------------------------------------------------------
class LabelProposal(BaseModel):
    """A label in DetCLIPv3's object-captioner format, phrase|category|parent."""

    phrase: str = Field(description="a short descriptive phrase, e.g. 'a goat holding flowers'")
    category: str = Field(description="the object's category, e.g. 'goat': the label to confirm and add")
    parent: str | None = Field(None, description="a coarser parent category, e.g. 'animal'")


class MemoryMatch(BaseModel):
    """How a proposed name relates to a memory's entries."""

    name: str = Field(description="the name looked up (the proposal's category or parent)")
    status: Literal["held", "near", "none"] = Field(
        description="held: the memory has this name; near: its nearest label is at least as similar as the "
        "server's near threshold; none: nothing close (or the memory is empty)"
    )
    level: Literal["label", "category", "parent"] | None = Field(
        None, description="where the memory holds the name (held only): as a label, or as a category or parent"
    )
    label: str | None = Field(None, description="the memory label holding the name, or the nearest one")
    similarity: float | None = Field(None, description="CLIP cosine similarity of the name's text to that label")
    kind: EntryKind | None = Field(
        None, description="the entries compared with: label texts, or exemplar images when the memory has no texts"
    )


class ProposalCheck(BaseModel):
    memory: str
    category: MemoryMatch
    parent: MemoryMatch | None = None


class RegionDescription(BaseModel):
    box: list[float] = Field(description="the region described, in pixels")
    caption: str | None = Field(description="one sentence about the region in its surroundings")
    attributes: dict[str, str] = Field(description="e.g. colour, material, state, count")
    proposal: LabelProposal | None = Field(description="the label the MLLM proposes; None if it wrote none")
    fallback: Fallback = Field(
        description="none: caption, attributes and label all read from the requested JSON; partial: some were "
        "found elsewhere in the answer or not at all; full: none was found"
    )
    missing: list[str] = Field(description="parts of the answer not found")
    raw_text: str = Field(description="the model's answer as written")
    view_steps: list[float] = Field(description="DynRefer t of each view shown (0: the tight view)")
    check: ProposalCheck | None = Field(None, description="the proposal checked against the memory, when given")
    timings: dict[str, float]


class DescribeResult(BaseModel):
    image_size: list[int] = Field(description="width and height of the image in pixels")
    regions: list[RegionDescription] = Field(description="one per box, in order")
    describer: str = Field(description="the backend and model that wrote the descriptions")
    timings: dict[str, float]
