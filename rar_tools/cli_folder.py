"""`rar-tools add MEMORY --folder DIR`: one label per subfolder, unreadable images skipped and named.

The images go in calls of at most `limits.MAX_IMAGES_PER_ADD`; Ctrl-C stops between two calls and
says how far it got (adding is idempotent, so the same command continues where it stopped). A
progress bar on stderr when it is a terminal; one line per label on stdout, or with `--json` one
JSON document for the whole folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from tqdm import tqdm

from rar_tools.errors import RarToolsError
from rar_tools.images import IMAGE_SUFFIXES
from rar_tools.interrupts import stop_on_interrupt
from rar_tools.limits import MAX_IMAGES_PER_ADD
from rar_tools.schemas import SkippedInput

if TYPE_CHECKING:
    from rar_tools.api import RarTools


class LabelAdded(BaseModel):
    """What one subfolder added."""

    label: str
    added: int
    already_present: int
    skipped: list[SkippedInput] = Field(default_factory=list, description="its images that could not be read")


class FolderAddResult(BaseModel):
    """What `add --folder` did, over all its labels (the `--json` document)."""

    memory: str
    created: bool = Field(description="whether this command created the memory")
    added: int
    already_present: int
    count: int = Field(description="entries in the memory afterwards")
    labels: list[LabelAdded]


def folder_images(folder: Path) -> dict[str, list[str]]:
    """`folder/<label>/<image>` → {label: [absolute image paths]}, labels sorted."""
    if not folder.is_dir():
        raise RarToolsError(f"folder {str(folder)!r} does not exist or is not a folder")
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(str(p.absolute()) for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            found[sub.name.replace("_", " ")] = files
    if not found:
        raise RarToolsError(f"folder {str(folder)!r} has no label subfolders with images")
    return found


def render_label(result: LabelAdded) -> str:
    """One label's line, then a line per skipped file."""
    head = f"{result.label}: stored {result.added} new exemplar image(s)"
    if result.already_present:
        head += f"; {result.already_present} already present, not stored again"
    if result.skipped:
        head += f"; skipped {len(result.skipped)} unreadable image(s):"
    return "\n".join([head, *(f"  {s.source}: {s.reason}" for s in result.skipped)])


def add_folder(
    tools: RarTools, memory: str, folder: Path, category: str | None, parent: str | None, as_json: bool
) -> FolderAddResult:
    """Add every label subfolder of `folder` to `memory`, printing as it goes (see the module)."""
    groups = folder_images(folder)
    total = sum(len(files) for files in groups.values())
    labels: list[LabelAdded] = []
    created, done, count = False, 0, 0
    with stop_on_interrupt() as stop, tqdm(total=total, unit="img", file=sys.stderr, disable=None) as bar:
        for label, files in groups.items():
            result = LabelAdded(label=label, added=0, already_present=0)
            for start in range(0, len(files), MAX_IMAGES_PER_ADD):
                stop.check(done, total, "images")
                chunk = files[start : start + MAX_IMAGES_PER_ADD]
                added = tools.add_images(memory, chunk, label, category, parent, skip_unreadable=True)
                if added.created and not as_json:
                    bar.write(f"created memory {memory!r} (it did not exist)", file=sys.stdout)
                created = created or added.created
                result.added += added.added
                result.already_present += added.already_present
                result.skipped += added.skipped
                count = added.count
                done += len(chunk)
                bar.update(len(chunk))
            labels.append(result)
            if not as_json:
                bar.write(render_label(result), file=sys.stdout)
    return FolderAddResult(
        memory=memory,
        created=created,
        added=sum(r.added for r in labels),
        already_present=sum(r.already_present for r in labels),
        count=count,
        labels=labels,
    )
