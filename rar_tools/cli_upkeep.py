"""The memory upkeep commands (`export`, `import`, `reembed`, `duplicates`, `conflicts`, `relabel`;
docs/portability.md): their entries of `cli.OPERATIONS`, and the progress bar on stderr of the
ones whose operations report progress."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from rar_tools import render
from rar_tools.requests_upkeep import (
    ConflictsRequest,
    DuplicatesRequest,
    ExportRequest,
    ImportRequest,
    ReembedRequest,
    RelabelRequest,
)

# command: (help, request model, the API method, the renderer of its result), as `cli.OPERATIONS`
UPKEEP_OPERATIONS: dict[str, tuple[str, Any, str, Callable[[Any], str]]] = {
    "export": ("write a memory to a .rar-memory archive", ExportRequest, "export", lambda r: r.message),
    "import": ("store the memory of a .rar-memory archive", ImportRequest, "import_memory", lambda r: r.message),
    "reembed": (
        "re-encode a memory with the encoder of --clip-model / --clip-pretrained (resumable)",
        ReembedRequest,
        "reembed",
        lambda r: r.message,
    ),
    "duplicates": ("near-identical exemplar images", DuplicatesRequest, "find_duplicates", render.render_duplicates),
    "conflicts": ("likely mislabelled exemplar images", ConflictsRequest, "find_conflicts", render.render_conflicts),
    "relabel": (
        "move entries to another label",
        RelabelRequest,
        "relabel",
        lambda r: f"moved {r.moved} entries to {r.label!r}; {len(r.not_found)} ids not found",
    ),
}
WITH_PROGRESS_BAR = ("import", "reembed")


def with_progress_bar(call: Callable[..., BaseModel], request: Any, quiet: bool) -> BaseModel:
    """`call(request)` with a progress bar on stderr fed by its progress callback: on a terminal only
    (none when stderr is piped, as for every bar of the CLI), and none with `quiet`."""
    from tqdm import tqdm

    with tqdm(unit="entry", file=sys.stderr, disable=True if quiet else None) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return call(request, progress=advance)


def call_operation(call: Callable[..., BaseModel], request: Any, command: str, quiet: bool) -> BaseModel:
    """`call(request)` for `command`, with a progress bar on stderr where it reports progress."""
    return with_progress_bar(call, request, quiet) if command in WITH_PROGRESS_BAR else call(request)
