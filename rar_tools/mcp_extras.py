"""MCP resources (memories and their exemplar images) and the workflow prompt."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

if TYPE_CHECKING:
    from rar_tools.api import RarTools
from rar_tools.errors import ExemplarFileError, RarToolsError
from rar_tools.limits import DEFAULT_LIST_LABELS

T = TypeVar("T")

WORKFLOW = """You can recognise fine-grained categories in images with the rar-tools server.
Work step by step:

1. Call `retrieve_candidates` with memory={memory!r} and the image {image}. It returns up to k
   distinct candidate labels from the memory with similarity scores. Ask for `thumbnails=true` to
   see the best stored example of each candidate, and compare them with the image yourself.
2. If you suspect the right label is missing, add your own guesses to the candidate list.
3. Call `rank_candidates` with the image and the candidate list: a multimodal LLM orders them
   (mode "score" gives probabilities; "generate" writes a ranked list). `recognize` does steps 1
   and 3 in one call.
4. Tell the user the best label and how sure you are (probabilities; when several are close, say
   so, and use the `category` / `parent` levels if the memory has them).
5. When no candidate is likely (or the memory has nothing close), let the MLLM propose a label:
   call `recognize` with `propose_when_unsure=true` and a `min_confidence` (e.g. 0.5), or
   `describe_regions` with the boxes and memory={memory!r}. The answer carries a caption, attributes
   and a proposal `phrase|category|parent`, checked against the memory: `held` (it knows the name),
   `near` (a similar label, with its similarity) or `none`. Show the proposal to the user and ask.
6. When the user confirms the label, or corrects it, call `add_to_memory` with the image (and its
   `box`) and the confirmed label, with the proposal's category and parent: the memory learns it, and
   the next retrieval knows this example. Never store a label the user has not confirmed.
   (To see where things are, `segment` gives a mask per label; `detect_objects` with "an object"
   then `describe_regions` names everything in a picture.)
"""


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a store call in a worker thread; a damaged or missing stored file becomes a resource
    error naming it, our other errors 'resource not found'."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))
    except ExemplarFileError as exc:
        raise ResourceError(str(exc)) from exc
    except RarToolsError as exc:
        raise ResourceNotFoundError(str(exc)) from exc


def register_resources(mcp: MCPServer, tools: RarTools) -> None:
    """`memory://` (all memories), `memory://{name}` (one; `.../labels/{cursor}` its next label pages),
    `memory://{name}/{entry_id}` (an exemplar)."""

    @mcp.resource("memory://", name="memories", mime_type="application/json")
    async def all_memories() -> str:
        """Every memory with its counts and encoder."""
        return (await in_thread(tools.list_memories, 100)).model_dump_json(indent=2)

    @mcp.resource("memory://{name}", name="memory", mime_type="application/json")
    async def one_memory(name: str) -> str:
        """One memory: the kinds held, the encoder, and its first labels with their entry counts
        (most first); `next_cursor` names the next page, memory://{name}/labels/{cursor}."""
        return (await in_thread(tools.describe_memory, name, DEFAULT_LIST_LABELS)).model_dump_json(indent=2)

    @mcp.resource("memory://{name}/labels/{cursor}", name="memory-labels", mime_type="application/json")
    async def memory_page(name: str, cursor: str) -> str:
        """The next page of a memory's labels, after the `next_cursor` of the page before."""
        info = await in_thread(tools.describe_memory, name, DEFAULT_LIST_LABELS, cursor)
        return info.model_dump_json(indent=2)

    @mcp.resource("memory://{name}/{entry_id}", name="exemplar", mime_type="image/jpeg")
    async def exemplar(name: str, entry_id: str) -> bytes:
        """The stored copy of one exemplar image (refused by name when it is missing or damaged)."""
        return await in_thread(tools.exemplar_jpeg, name, entry_id)


def register_prompts(mcp: MCPServer) -> None:
    """The `recognize_step_by_step` prompt."""

    @mcp.prompt()
    def recognize_step_by_step(image: str, memory: str = "default") -> str:
        """How to recognise an image with retrieve, rank, and add-on-confirmation."""
        return WORKFLOW.format(memory=memory, image=repr(image))
