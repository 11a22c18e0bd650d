"""The argument types of the operations: each carries its schema (`Field`: type, bounds, description),
its check (a `BeforeValidator` raising the stage's `RarToolsError` with a sentence naming the argument)
and optional markers: `Surfaces` (a field not on every surface) and `Cli` (how the command line spells
it). Field groups shared by several operations are here too. Light to import."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from rar_tools import limits
from rar_tools.limits import RankerView, RankMode, RetrievalMode
from rar_tools.validation import (
    check_boxes,
    check_confidence,
    check_entry_ids,
    check_k,
    check_label,
    check_memory_name,
    check_ranker_view,
    check_views,
)

Surface = Literal["api", "mcp", "cli"]


@dataclass(frozen=True)
class Surfaces:
    """A field offered on these surfaces only (a field without it is on all three)."""

    names: frozenset[str]

    def __init__(self, *names: Surface) -> None:
        object.__setattr__(self, "names", frozenset(names))


@dataclass(frozen=True)
class Cli:
    """How the command line spells a field: `flag` replaces `--field-name`, `positional` makes it
    an argument, `repeat` makes a list flag repeatable (one value group per use)."""

    flag: str | None = None
    positional: bool = False
    repeat: bool = False


class ImageSource:
    """Marks an image argument: the CLI turns a relative path into an absolute one."""


IMAGE_SOURCE = ImageSource()


def check_k_value(k: Any) -> int:
    return check_k(k)


# -- argument types, each with its schema, check and description ----------------------------------
MemoryName = Annotated[
    str,
    Field(
        json_schema_extra={
            "minLength": 1,
            "maxLength": limits.MAX_MEMORY_NAME_CHARS,
            "pattern": f"^{limits.MEMORY_NAME.pattern}$",
        },
        description="memory name: 1-64 letters, digits, '.', '_', '-', alphanumeric at both ends",
    ),
    BeforeValidator(check_memory_name),
]
ImageArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=limits.MAX_IMAGE_ARG_CHARS,
        description="absolute image file path, base64 image data, a data:image/...;base64, URL, "
        "or an http(s) URL where the server allows URLs",
    ),
    IMAGE_SOURCE,
]
Label = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_LABEL_CHARS, description="a class label, e.g. 'Blue Jay'"),
    BeforeValidator(lambda value: check_label(value)),
]
DetectorQuery = Annotated[
    str, Field(min_length=1, max_length=limits.MAX_LABEL_CHARS, description="a text query, e.g. 'a bird'")
]
OptionalLevel = Annotated[str | None, Field(max_length=limits.MAX_LABEL_CHARS, description="optional coarser level")]
Coordinates = Annotated[
    list[float],
    Field(
        min_length=4,
        max_length=4,
        description="x1, y1, x2, y2 (left, top, right, bottom) in pixels, or in 0..1 with box_normalized",
    ),
]
K = Annotated[
    int,
    Field(ge=1, le=limits.MAX_K, description="number of distinct labels to return"),
    BeforeValidator(check_k_value),
]
RetrievalModeArg = Annotated[
    RetrievalMode,
    Field(
        description="image: nearest exemplar images (few-shot); text: nearest label texts "
        "(zero-shot); auto: whatever the memory holds, fused (for a region: label texts if any)"
    ),
]
RankModeArg = Annotated[
    RankMode,
    Field(
        description="score: the MLLM's likelihood of each candidate as the answer (fast, always on-list); "
        "generate: the MLLM writes a ranked list that is parsed (the RAR paper's way)"
    ),
]


EntryIds = Annotated[
    list[Annotated[str, Field(max_length=limits.MAX_ENTRY_ID_CHARS)]] | None,
    Field(max_length=limits.MAX_IDS_PER_REMOVE, description="ids of the entries to act on"),
    BeforeValidator(check_entry_ids),
    Cli(flag="--id", repeat=True),
]
LabelSelection = Annotated[
    str | None,
    Field(max_length=limits.MAX_LABEL_CHARS, description="act on every entry of this label"),
    BeforeValidator(lambda value: None if value is None else check_label(value)),  # as labels are stored
]


class BoxFields(BaseModel):
    """A region of the image: one box, in pixels or fractions."""

    box: Annotated[Coordinates | None, Field(description="a region of the image to work on instead of all of it")] = (
        None
    )
    box_normalized: Annotated[
        bool, Field(description="box coordinates are fractions (0..1) of the image's width/height")
    ] = False


class BoxesFields(BaseModel):
    """Many regions of one image."""

    boxes: Annotated[
        list[Coordinates],
        Field(min_length=1, max_length=limits.MAX_BOXES, description="1-100 boxes"),
        BeforeValidator(check_boxes),
        Cli(flag="--box", repeat=True),
    ]
    box_normalized: Annotated[
        bool, Field(description="box coordinates are fractions (0..1) of the image's width/height")
    ] = False


class ViewFields(BaseModel):
    """How CLIP sees a region, and how sure an answer must be."""

    views: Annotated[
        int,
        Field(
            ge=1,
            le=limits.MAX_VIEWS,
            description="region views CLIP embeds: 1 = RAR's blurred crop; 3 = plus the 2 DynRefer context views "
            "that differ most from it, their similarities fused (tight view weighted most)",
        ),
        BeforeValidator(check_views),
    ] = 1
    car_filter: Annotated[
        bool,
        Field(
            description="CaR filter for a region: re-score the candidates on visually prompted views (red "
            "ellipse, blurred and greyed background) and drop those below the threshold until the set is "
            "stable; costs 2 more image encodings per region and one text encoding per candidate"
        ),
    ] = False
    min_confidence: Annotated[
        float,
        Field(
            ge=0.0,
            le=1.0,
            description="levels.answer is the finest level (label, category, parent) with at least this probability",
        ),
        BeforeValidator(check_confidence),
    ] = 0.0


class RankerViewFields(BaseModel):
    """What the MLLM sees of a region."""

    ranker_view: Annotated[
        RankerView,
        Field(description="what the MLLM sees of a region: crop = blurred-background crop; prompt = red ellipse on it"),
        BeforeValidator(check_ranker_view),
    ] = "crop"
    ranker_context: Annotated[
        bool, Field(description="also show the MLLM the whole image with the region marked (multi-image models)")
    ] = False


class RankingFields(BaseModel):
    """How the MLLM ranks."""

    mode: RankModeArg = "score"
    exemplars: Annotated[bool, Field(description="show stored exemplar images to the MLLM")] = False
    icl: Annotated[bool, Field(description="add a worked example of the answer format (generate mode)")] = False


class ThumbnailFields(BaseModel):
    thumbnails: Annotated[
        bool,
        Field(description="also return a small JPEG of each candidate's best stored exemplar (total under 0.5 MB)"),
        Surfaces("mcp"),
    ] = False


class ProposalFields(BaseModel):
    """What to do when recognition is unsure."""

    propose_when_unsure: Annotated[
        bool,
        Field(
            description="when the best probability is under min_confidence (or nothing was retrieved), also "
            "describe the region with the MLLM and propose a label (phrase|category|parent) checked against "
            "the memory: ask the user, then add_to_memory the confirmed label"
        ),
    ] = False


# -- helpers for the surfaces -----------------------------------------------------------------------
def field_surfaces(metadata: Sequence[Any]) -> frozenset[str]:
    """The surfaces a field is offered on, from its `Surfaces` marker (all three without one)."""
    for item in metadata:
        if isinstance(item, Surfaces):
            return item.names
    return frozenset(("api", "mcp", "cli"))


def validation_message(exc: Any) -> str:
    """Pydantic's errors as sentences naming the argument, without pydantic's internals."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "the arguments"
        if error["type"] == "missing":
            parts.append(f"`{where}` is required")
            continue
        given = error.get("input")
        shown = repr(given)[:60] if given is not None and error["type"] != "missing" else None
        parts.append(f"{where}: {error['msg'].rstrip('.')}" + (f" (got {shown})" if shown else ""))
    return "; ".join(parts)
