"""The MCP server: thin, typed tool wrappers over `RarTools`."""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from rar_tools import __version__
from rar_tools.api import RarTools
from rar_tools.errors import RarToolsError
from rar_tools.lazy import BackgroundModel
from rar_tools.mcp_extras import register_prompts, register_resources
from rar_tools.memory import MEMORY_NAME
from rar_tools.schemas import (
    AddResult,
    Candidate,
    DetectResult,
    MemoryList,
    RankOutput,
    RecognizeResult,
    RegionsResult,
    RemoveResult,
    RetrieveResult,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

INSTRUCTIONS = """Fine-grained visual recognition with an explicit memory (RAR).
Memories hold labelled exemplar images (few-shot) and label texts (zero-shot) as CLIP embeddings.
Typical flow: retrieve_candidates for an image, look at the candidates (add your own if you like),
rank_candidates to let the multimodal LLM order them (or recognize to do both in one call), then,
when the user confirms or corrects the label, add_to_memory so the next retrieval knows it.
For an object inside an image, pass its `box` (x1, y1, x2, y2 in pixels); for many objects use
recognize_regions; detect_objects proposes boxes for coarse queries ("a bird") to name at fine grain.
Results carry category/parent probabilities: fall back to those when the label is uncertain.
Images are absolute file paths on the server's machine, base64 data or data:image/... URLs.
The server may be limited to some folders (paths outside them are refused) and fetches http(s)
image URLs only when started with --allow-urls; send base64 when a path or URL is refused."""

# The schema states the memory-name rule; `check_memory_name` enforces it with our own message
# (pydantic's "String should match pattern ..." would tell the caller much less).
MemoryName = Annotated[
    str,
    Field(
        json_schema_extra={"minLength": 1, "maxLength": 64, "pattern": f"^{MEMORY_NAME.pattern}$"},
        description="memory name: 1-64 letters, digits, '.', '_', '-', alphanumeric at both ends",
    ),
]
ImageArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=30_000_000,
        description="absolute image file path, base64 image data, a data:image/...;base64, URL, "
        "or an http(s) URL where the server allows URLs",
    ),
]
Label = Annotated[str, Field(min_length=1, max_length=200, description="a class label, e.g. 'Blue Jay'")]
RetrievalModeArg = Annotated[
    Literal["auto", "image", "text"],
    Field(
        description="image: nearest exemplar images (few-shot); text: nearest label texts "
        "(zero-shot); auto: whatever the memory holds, fused (for a region: label texts if any)"
    ),
]
RankModeArg = Annotated[
    Literal["score", "generate"],
    Field(
        description="score: the MLLM's likelihood of each candidate as the answer (fast, always on-list); "
        "generate: the MLLM writes a ranked list that is parsed (the RAR paper's way)"
    ),
]
ThumbnailsArg = Annotated[
    bool,
    Field(description="also return a small JPEG of each candidate's best stored exemplar (total under 0.5 MB)"),
]
IclArg = Annotated[bool, Field(description="add a worked example of the answer format (generate mode)")]
ExemplarsArg = Annotated[bool, Field(description="show stored exemplar images to the MLLM")]
OptionalLevel = Annotated[str | None, Field(max_length=200, description="optional coarser level")]
Coordinates = Annotated[
    list[float],
    Field(
        min_length=4,
        max_length=4,
        description="x1, y1, x2, y2 (left, top, right, bottom) in pixels, or in 0..1 with box_normalized",
    ),
]
BoxArg = Annotated[Coordinates | None, Field(description="a region of the image to work on instead of all of it")]
BoxNormalized = Annotated[bool, Field(description="box coordinates are fractions (0..1) of the image's width/height")]
ViewsArg = Annotated[
    int,
    Field(
        ge=1,
        le=5,
        description="region views CLIP embeds: 1 = RAR's blurred crop; 3 = plus the 2 DynRefer context views "
        "that differ most from it, their similarities fused (tight view weighted most)",
    ),
]
CarFilterArg = Annotated[
    bool,
    Field(
        description="CaR filter for a region: re-score the candidates on visually prompted views (red ellipse, "
        "blurred and greyed background) and drop those below the threshold until the set is stable; costs "
        "2 more image encodings per region and one text encoding per candidate"
    ),
]
RankerViewArg = Annotated[
    Literal["crop", "prompt"],
    Field(description="what the MLLM sees of a region: crop = blurred-background crop; prompt = red ellipse on it"),
]
RankerContextArg = Annotated[
    bool, Field(description="also show the MLLM the whole image with the region marked (multi-image models)")
]
MinConfidence = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        description="levels.answer is the finest level (label, category, parent) with at least this probability",
    ),
]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
ADDITIVE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


async def wait_until_loaded(model: BackgroundModel, ctx: Context, timeout: float) -> None:
    """Wait for a background model, reporting progress each second when the client asked."""
    waited = 0
    while not await anyio.to_thread.run_sync(model.wait, 1.0):
        waited += 1
        await ctx.report_progress(waited, None, f"waiting for the {model.name} to load ({waited} s)")
        if waited >= timeout:
            raise ToolError(f"the {model.name} is still loading after {waited} s; try again shortly")


async def run_api(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking API call in a worker thread; caller-fixable errors become `ToolError`."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    except RarToolsError as exc:
        raise ToolError(str(exc)) from exc


def thread_progress(ctx: Context, what: str) -> Callable[[int, int], None]:
    """A progress callback usable from the worker thread that runs an API call."""

    def report(done: int, total: int) -> None:
        anyio.from_thread.run(functools.partial(ctx.report_progress, done, total, f"{what}: {done}/{total}"))

    return report


async def with_thumbnails(
    tools: RarTools, result: BaseModel, memory: str, candidates: Sequence[Candidate]
) -> CallToolResult:
    """The result as structured content and JSON text, followed by exemplar thumbnails if asked."""
    content: list[TextContent | ImageContent] = [TextContent(type="text", text=result.model_dump_json())]
    for label, entry, data in await run_api(tools.exemplar_thumbnails, memory, candidates):
        content.append(TextContent(type="text", text=f"best stored exemplar of {label!r} (entry {entry}):"))
        content.append(ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type="image/jpeg"))
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


def create_server(tools: RarTools) -> MCPServer:
    """An MCP server exposing `tools`; models start loading when the server starts."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[RarTools]:
        tools.start_loading()
        yield tools

    mcp = MCPServer("rar-tools", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan)
    timeout = tools.settings.model_wait_timeout

    async def wait_for_recognition(ctx: Context) -> None:
        """Wait for the encoder and, unless the server has none, the ranker."""
        await wait_until_loaded(tools.clip, ctx, timeout)
        if not tools.settings.no_ranker:
            await wait_until_loaded(tools.mllm, ctx, timeout)

    @mcp.tool(annotations=ADDITIVE)
    async def add_to_memory(
        memory: MemoryName,
        ctx: Context,
        images: Annotated[
            list[ImageArg] | None, Field(max_length=64, description="1-64 images, all of `label`")
        ] = None,
        label: Annotated[str | None, Field(max_length=200, description="the label of `images`")] = None,
        labels: Annotated[
            list[Label] | None,
            Field(max_length=1000, description="label texts to store for zero-shot retrieval (instead of images)"),
        ] = None,
        category: OptionalLevel = None,
        parent: OptionalLevel = None,
        box: BoxArg = None,
        box_normalized: BoxNormalized = False,
    ) -> AddResult:
        """Store labelled exemplar images, or label texts, in a memory (created on first use).

        Give `images` with their `label`, or `labels` alone. Re-adding the same image with the same
        label stores nothing new. All images are checked first: one bad image stores nothing.
        With `box`, the region of each image is stored (its crop), not the whole image.
        """
        if (images is None) == (labels is None):
            raise ToolError("give either `images` (with `label`) or `labels`, not both and not neither")
        if images is not None and not label:
            raise ToolError("`label` is required with `images`: the label every given image shows")
        if box is not None and images is None:
            raise ToolError("`box` goes with `images`: the region of the images to store")
        await wait_until_loaded(tools.clip, ctx, timeout)
        if images is not None:
            return await run_api(
                tools.add_images,
                memory,
                images,
                label,
                category,
                parent,
                progress=thread_progress(ctx, "adding images"),
                box=box,
                box_normalized=box_normalized,
            )
        return await run_api(tools.add_labels, memory, labels, category, parent)

    @mcp.tool(annotations=READ_ONLY)
    async def retrieve_candidates(
        memory: MemoryName,
        image: ImageArg,
        ctx: Context,
        k: Annotated[int, Field(ge=1, le=50, description="number of distinct labels to return")] = 5,
        mode: RetrievalModeArg = "auto",
        box: BoxArg = None,
        box_normalized: BoxNormalized = False,
        views: ViewsArg = 1,
        car_filter: CarFilterArg = False,
        min_confidence: MinConfidence = 0.0,
        thumbnails: ThumbnailsArg = False,
    ) -> Annotated[CallToolResult, RetrieveResult]:
        """The k most similar distinct labels for an image or a region of it, with scores, supporting
        entries, and category/parent probabilities."""
        await wait_until_loaded(tools.clip, ctx, timeout)
        result = await run_api(
            tools.retrieve,
            memory,
            image,
            k,
            mode,
            box=box,
            box_normalized=box_normalized,
            views=views,
            car_filter=car_filter,
            min_confidence=min_confidence,
        )
        return await with_thumbnails(tools, result, memory, result.candidates if thumbnails else [])

    @mcp.tool(annotations=READ_ONLY)
    async def list_memories(
        max_labels: Annotated[int, Field(ge=0, le=10000, description="labels listed per memory")] = 100,
    ) -> MemoryList:
        """All memories with their entry counts per kind and per label, and their CLIP encoder."""
        return await run_api(tools.list_memories, max_labels)

    @mcp.tool(annotations=DESTRUCTIVE)
    async def remove_from_memory(
        memory: MemoryName,
        entry_ids: Annotated[
            list[Annotated[str, Field(max_length=64)]] | None, Field(max_length=1000, description="entry ids to remove")
        ] = None,
        label: Annotated[str | None, Field(max_length=200, description="remove every entry of this label")] = None,
    ) -> RemoveResult:
        """Remove entries from a memory by id and/or by label. Unused exemplar copies are deleted."""
        return await run_api(tools.remove, memory, entry_ids, label)

    @mcp.tool(annotations=READ_ONLY)
    async def rank_candidates(
        image: ImageArg,
        candidates: Annotated[
            list[Label], Field(min_length=2, max_length=50, description="2-50 distinct labels to order")
        ],
        ctx: Context,
        mode: RankModeArg = "score",
        memory: Annotated[MemoryName | None, Field(description="memory to take exemplar images from")] = None,
        exemplars: Annotated[
            bool, Field(description="show each candidate's best stored exemplar image next to its name (needs memory)")
        ] = False,
        icl: IclArg = False,
        box: BoxArg = None,
        box_normalized: BoxNormalized = False,
        ranker_view: RankerViewArg = "crop",
        ranker_context: RankerContextArg = False,
    ) -> RankOutput:
        """Order candidate labels for an image, or a region of it, with the multimodal LLM, best first."""
        if not tools.settings.no_ranker:
            await wait_until_loaded(tools.mllm, ctx, timeout)
        if exemplars:
            await wait_until_loaded(tools.clip, ctx, timeout)
        await ctx.report_progress(0, 1, "ranking")
        result = await run_api(
            tools.rank,
            image,
            candidates,
            mode,
            memory,
            exemplars,
            icl,
            box=box,
            box_normalized=box_normalized,
            ranker_view=ranker_view,
            ranker_context=ranker_context,
        )
        await ctx.report_progress(1, 1, "ranked")
        return result

    @mcp.tool(annotations=READ_ONLY)
    async def recognize(
        memory: MemoryName,
        image: ImageArg,
        ctx: Context,
        k: Annotated[int, Field(ge=1, le=50, description="candidates to retrieve and rank")] = 5,
        mode: RankModeArg = "score",
        retrieval_mode: RetrievalModeArg = "auto",
        exemplars: ExemplarsArg = False,
        icl: IclArg = False,
        box: BoxArg = None,
        box_normalized: BoxNormalized = False,
        views: ViewsArg = 1,
        car_filter: CarFilterArg = False,
        ranker_view: RankerViewArg = "crop",
        ranker_context: RankerContextArg = False,
        min_confidence: MinConfidence = 0.0,
        thumbnails: ThumbnailsArg = False,
    ) -> Annotated[CallToolResult, RecognizeResult]:
        """Retrieve the k best candidates from a memory, then rank them with the MLLM (RAR), for an
        image or a region of it."""
        await wait_for_recognition(ctx)
        result = await run_api(
            tools.recognize,
            memory,
            image,
            k,
            mode,
            retrieval_mode,
            exemplars,
            icl,
            box=box,
            box_normalized=box_normalized,
            views=views,
            car_filter=car_filter,
            ranker_view=ranker_view,
            ranker_context=ranker_context,
            min_confidence=min_confidence,
            progress=thread_progress(ctx, "recognising"),
        )
        return await with_thumbnails(tools, result, memory, result.retrieval.candidates if thumbnails else [])

    @mcp.tool(annotations=READ_ONLY)
    async def recognize_regions(
        memory: MemoryName,
        image: ImageArg,
        boxes: Annotated[list[Coordinates], Field(min_length=1, max_length=100, description="1-100 boxes")],
        ctx: Context,
        k: Annotated[int, Field(ge=1, le=50, description="candidates to retrieve and rank per box")] = 5,
        mode: RankModeArg = "score",
        retrieval_mode: RetrievalModeArg = "auto",
        exemplars: ExemplarsArg = False,
        icl: IclArg = False,
        box_normalized: BoxNormalized = False,
        views: ViewsArg = 1,
        car_filter: CarFilterArg = False,
        ranker_view: RankerViewArg = "crop",
        ranker_context: RankerContextArg = False,
        min_confidence: MinConfidence = 0.0,
    ) -> RegionsResult:
        """Recognise many regions of one image in one call (CLIP work batched over all boxes and
        views), e.g. the boxes detect_objects proposed. One result per box, in order."""
        await wait_for_recognition(ctx)
        return await run_api(
            tools.recognize_regions,
            memory,
            image,
            boxes,
            k,
            mode,
            retrieval_mode,
            exemplars,
            icl,
            box_normalized=box_normalized,
            views=views,
            car_filter=car_filter,
            ranker_view=ranker_view,
            ranker_context=ranker_context,
            min_confidence=min_confidence,
            progress=thread_progress(ctx, "recognising regions"),
        )

    @mcp.tool(annotations=READ_ONLY)
    async def detect_objects(
        image: ImageArg,
        queries: Annotated[
            list[Label],
            Field(min_length=1, max_length=50, description="what to look for, coarse is fine: 'a bird', 'a car'"),
        ],
        ctx: Context,
        threshold: Annotated[
            float | None, Field(ge=0.0, le=1.0, description="minimum detector score (default: the server's)")
        ] = None,
        max_boxes: Annotated[int, Field(ge=1, le=100, description="most boxes returned")] = 50,
    ) -> DetectResult:
        """Box proposals from an open-vocabulary detector (OWLv2), best first, in pixels. Name each
        box at fine grain with recognize_regions. The detector loads on the first call."""
        await wait_until_loaded(tools.detector, ctx, timeout)
        return await run_api(tools.detect, image, queries, threshold, max_boxes)

    register_resources(mcp, tools)
    register_prompts(mcp)
    return mcp


def run_server(tools: RarTools) -> None:
    """Serve over stdio (the default) or streamable HTTP, as the settings say."""
    server = create_server(tools)
    s = tools.settings
    if s.transport == "http":
        log.info("serving MCP over streamable HTTP at http://%s:%d/mcp", s.host, s.port)
        server.run("streamable-http", host=s.host, port=s.port, max_request_body_size=s.http_max_request_bytes)
    else:
        server.run("stdio")
