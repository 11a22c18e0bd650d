"""The MCP server: one tool per operation, each derived from its request model (`requests.py`) and
run by the Python API in a worker thread. Importing this module loads no model library."""

from __future__ import annotations

import base64
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel

from rar_tools import __version__
from rar_tools.errors import RarToolsError
from rar_tools.http_auth import auth_settings, refuse_read_only_token
from rar_tools.lazy import BackgroundModel
from rar_tools.mcp_extras import register_prompts, register_resources
from rar_tools.mcp_protocol import RarServer
from rar_tools.progress import CallProgress
from rar_tools.requests import OPERATIONS, Request
from rar_tools.schemas import Candidate
from rar_tools.tool_schema import tool_parameters
from rar_tools.vision_schemas import DescribeResult, SegmentResult

if TYPE_CHECKING:
    from rar_tools.api import RarTools

log = logging.getLogger(__name__)
T = TypeVar("T")
Picture = tuple[str, bytes | None, str]  # caption, image data (None: the caption alone), MIME type
WAIT_STEP_S = 1.0  # a progress step per this many seconds of waiting for a model

INSTRUCTIONS = """Fine-grained visual recognition with an explicit memory (RAR).
Memories hold labelled exemplar images (few-shot) and label texts (zero-shot) as CLIP embeddings.
Typical flow: retrieve_candidates for an image, look at the candidates (add your own if you like),
rank_candidates to let the multimodal LLM order them (or recognize to do both in one call), then,
when the user confirms or corrects the label, add_to_memory so the next retrieval knows it.
For an object inside an image, pass its `box` (x1, y1, x2, y2 in pixels); for many objects use
recognize_regions; detect_objects proposes boxes for coarse queries ("a bird") to name at fine grain.
Results carry category/parent probabilities: fall back to those when the label is uncertain.
Images are absolute file paths on the server's machine, base64 data or data:image/...;base64, URLs.
The server may be limited to some folders (paths outside them are refused) and fetches http(s)
image URLs only when started with --allow-urls; send base64 when a path or URL is refused.
To tidy a memory with the user: find_duplicates and find_conflicts (likely mislabelled exemplars),
then relabel_entries or remove_from_memory for what the user agrees to change."""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
ADDITIVE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


@dataclass(frozen=True)
class ToolSpec:
    """How the server offers one operation: the API call that runs its request, its annotations, a
    title, its result model, what its progress reports say, and where a result keeps its candidates
    (for `thumbnails`)."""

    name: str
    run: Callable[..., BaseModel]
    annotations: ToolAnnotations
    title: str
    result: type[BaseModel]
    progress: str | None = None
    candidates: Callable[[Any], Sequence[Candidate]] | None = None
    pictures: Callable[[Any, Any], list[Picture]] | None = None  # (request, result) -> images shown after it

    @property
    def request(self) -> type[Request]:
        return OPERATIONS[self.name]


def tool_specs(tools: RarTools) -> list[ToolSpec]:
    """Every tool of the server: a name from `requests.OPERATIONS` and the facade method behind it."""
    from rar_tools import schemas
    from rar_tools.schemas_upkeep import ConflictsResult, DuplicatesResult, RelabelResult

    return [
        ToolSpec("add_to_memory", tools.memories.add, ADDITIVE, "Add to memory", schemas.AddResult, "adding images"),
        ToolSpec(
            "retrieve_candidates",
            tools.searching.retrieve,
            READ_ONLY,
            "Retrieve candidate labels",
            schemas.RetrieveResult,
            candidates=lambda r: r.candidates,
        ),
        ToolSpec("list_memories", tools.memories.list_memories, READ_ONLY, "List memories", schemas.MemoryList),
        ToolSpec("remove_from_memory", tools.memories.remove, DESTRUCTIVE, "Remove from memory", schemas.RemoveResult),
        ToolSpec(
            "rank_candidates", tools.recognition.rank, READ_ONLY, "Rank candidates", schemas.RankOutput, "ranking"
        ),
        ToolSpec(
            "recognize",
            tools.recognition.recognize,
            READ_ONLY,
            "Recognize (retrieve, then rank)",
            schemas.RecognizeResult,
            "recognising",
            candidates=lambda r: r.retrieval.candidates,
        ),
        ToolSpec(
            "recognize_regions",
            tools.recognition.recognize_regions,
            READ_ONLY,
            "Recognize regions",
            schemas.RegionsResult,
            "recognising regions",
        ),
        ToolSpec(
            "detect_objects", tools.detection.detect, READ_ONLY, "Detect objects", schemas.DetectResult, "detecting"
        ),
        ToolSpec("find_duplicates", tools.upkeep.duplicates, READ_ONLY, "Find duplicates", DuplicatesResult),
        ToolSpec("find_conflicts", tools.upkeep.conflicts, READ_ONLY, "Find conflicts", ConflictsResult),
        ToolSpec("relabel_entries", tools.upkeep.relabel, DESTRUCTIVE, "Relabel entries", RelabelResult),
        ToolSpec(
            "segment",
            tools.segmentation.segment,
            READ_ONLY,
            "Segment (CLIP as RNN)",
            SegmentResult,
            "segmenting",
            pictures=lambda request, result: overlay_picture(tools, request, result),
        ),
        ToolSpec(
            "describe_regions",
            tools.describing.describe_regions,
            READ_ONLY,
            "Describe regions",
            DescribeResult,
            "describing regions",
        ),
        ToolSpec("delete_memory", tools.memories.delete_memory, DESTRUCTIVE, "Delete a memory", schemas.DeleteResult),
    ]


def overlay_picture(tools: RarTools, request: Any, result: SegmentResult) -> list[Picture]:
    """The segmentation overlay PNG, when the request asked for it."""
    if not request.overlay:
        return []
    return [("the masks over the image:", tools.segmentation.overlay(request, result), "image/png")]


async def wait_until_loaded(models: Sequence[BackgroundModel], progress: CallProgress, timeout: float) -> None:
    """Wait for background models, a progress step each second (sent when the client asked)."""
    for model in models:
        waited = 0
        while not await anyio.to_thread.run_sync(model.wait, WAIT_STEP_S, abandon_on_cancel=True):
            waited += 1
            await progress.waiting(f"waiting for the {model.name} to load ({waited * WAIT_STEP_S:g} s)")
            if waited * WAIT_STEP_S >= timeout:
                raise ToolError(
                    f"the {model.name} is still loading after {waited * WAIT_STEP_S:g} s; try again shortly"
                )


async def run_api(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking API call in a worker thread; caller-fixable errors become `ToolError`. A
    cancelled call (the client went away) stops waiting at once; its thread finishes on its own."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), abandon_on_cancel=True)
    except RarToolsError as exc:
        raise ToolError(str(exc)) from exc


async def with_thumbnails(tools: RarTools, result: BaseModel, memory: str, candidates: Sequence[Candidate]):
    """The result as structured content and JSON text, followed by exemplar thumbnails if asked (a
    thumbnail that cannot be made is a caption saying why)."""
    pictures: list[Picture] = []
    for thumb in await run_api(tools.exemplar_thumbnails, memory, candidates):
        if thumb.jpeg is None:
            pictures.append((f"no thumbnail of {thumb.label!r}: {thumb.problem}", None, "image/jpeg"))
        else:
            caption = f"best stored exemplar of {thumb.label!r} (entry {thumb.entry}):"
            pictures.append((caption, thumb.jpeg, "image/jpeg"))
    return with_pictures(result, pictures)


def with_pictures(result: BaseModel, pictures: Sequence[Picture]) -> CallToolResult:
    """The result as structured content and JSON text, then each picture's caption and image."""
    content: list[TextContent | ImageContent] = [TextContent(type="text", text=result.model_dump_json())]
    for caption, data, mime_type in pictures:
        content.append(TextContent(type="text", text=caption))
        if data is not None:
            content.append(ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime_type))
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


def make_tool(spec: ToolSpec, tools: RarTools) -> Callable[..., Any]:
    """The tool function of `spec`: its signature is the request model's MCP fields (so they make the
    input schema), its body builds the request, waits for the models it needs and runs it."""
    timeout = tools.settings.model_wait_timeout

    steps = spec.progress is not None and "progress" in inspect.signature(spec.run).parameters

    async def tool(ctx: Context, **arguments: Any) -> Any:
        try:
            refuse_read_only_token(spec.name, bool(spec.annotations.read_only_hint))
            request = spec.request.validated(arguments)
        except RarToolsError as exc:
            raise ToolError(str(exc)) from exc
        progress = CallProgress(ctx)
        await wait_until_loaded(tools.components.loading(request.needs()), progress, timeout)
        work = progress.work(spec.progress or spec.name)
        if steps:
            result = await run_api(spec.run, request, progress=work)
        else:
            if spec.progress:
                await work.started()
            result = await run_api(spec.run, request)
            if spec.progress:
                await work.finished()
        if spec.pictures is not None:
            return with_pictures(result, await run_api(spec.pictures, request, result))
        if spec.candidates is None:
            return result
        shown = spec.candidates(result) if getattr(request, "thumbnails", False) else []
        return await with_thumbnails(tools, result, request.memory, shown)

    parameters = tool_parameters(spec.request)
    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    returns = Annotated[CallToolResult, spec.result] if spec.candidates or spec.pictures else spec.result
    tool.__signature__ = inspect.Signature([*parameters, context], return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {**{p.name: p.annotation for p in parameters}, "ctx": Context, "return": returns}
    tool.__name__ = spec.name
    tool.__doc__ = spec.request.__doc__
    return tool


def create_server(tools: RarTools, token_verifier: TokenVerifier | None = None) -> MCPServer:
    """An MCP server exposing `tools`; models start loading when the server starts. With
    `token_verifier` (HTTP only), every request needs a bearer token it accepts."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[RarTools]:
        tools.start_loading()
        yield tools

    s = tools.settings
    auth = auth_settings(s.host, s.port) if token_verifier is not None else None
    mcp = RarServer(
        "rar-tools",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        token_verifier=token_verifier,
        auth=auth,
    )
    for spec in tool_specs(tools):
        description = inspect.cleandoc(spec.request.__doc__ or "")
        mcp.add_tool(
            make_tool(spec, tools),
            name=spec.name,
            title=spec.title,
            description=description,
            annotations=spec.annotations,
        )
    register_resources(mcp, tools)
    register_prompts(mcp)
    return mcp


def run_server(tools: RarTools) -> None:
    """Serve over stdio (the default) or streamable HTTP, as the settings say."""
    s = tools.settings
    if s.transport == "http":
        from rar_tools.http_auth import HashedTokenVerifier, read_token_file
        from rar_tools.http_transport import serve_http

        verifier = HashedTokenVerifier(read_token_file(s.auth_token_file)) if s.auth_token_file else None
        serve_http(create_server(tools, verifier), s)
        return
    from rar_tools.stdio_transport import serve_stdio

    anyio.run(serve_stdio, create_server(tools))
