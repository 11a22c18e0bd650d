"""Opening the embedded index of a data folder: in place when it can be written, otherwise from a
read-only snapshot, so that a read-only or full data folder still serves its memories.

Chroma writes to its folder whenever it opens (SQLite), so a read-only `chroma/` cannot be opened
in place at all, and a full disk fails the same way. Then the index is copied to a temporary folder
and opened there: listing, retrieval and ranking work as before, and the store refuses every write,
naming the condition (see `MemoryStore.read_only`). The copy is deleted when the store closes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rar_tools.errors import DiskFaultError, MemoryStoreError
from rar_tools.memory.faults import Problem, describe_problem, folder_problem, problem_of
from rar_tools.memory.index import open_persistent_client

log = logging.getLogger(__name__)

INDEX_FILE = "chroma.sqlite3"


@dataclass
class LocalIndex:
    """An embedded Chroma client; `problem` and `snapshot` are set when it reads a temporary copy
    because the folder itself cannot be written."""

    client: Any
    problem: Problem | None = None
    snapshot: Path | None = None

    def close(self) -> None:
        """Close the client and delete the snapshot, if any."""
        self.client.close()
        if self.snapshot is not None:
            shutil.rmtree(self.snapshot, ignore_errors=True)


def index_problem(chroma: Path) -> Problem | None:
    """Why the index folder `chroma` (or, before it exists, its data folder) cannot be written."""
    if not chroma.is_dir():
        return folder_problem(chroma.parent)
    database = chroma / INDEX_FILE
    if database.exists() and not os.access(database, os.W_OK):
        return "read-only"
    return folder_problem(chroma)


def open_local_index(chroma: Path) -> LocalIndex:
    """The index at `chroma`, opened in place, or from a read-only snapshot when the folder is
    read-only or its disk full (found before opening, or from the failed open)."""
    problem = index_problem(chroma)
    if problem is None:
        try:
            return LocalIndex(open_persistent_client(chroma))
        except DiskFaultError as exc:
            problem = problem_of(exc.__cause__ or exc)
            if problem is None:
                raise
    return open_snapshot(chroma, problem)


def open_snapshot(chroma: Path, problem: Problem) -> LocalIndex:
    """A client on a temporary copy of the index at `chroma` (an empty index if there is none)."""
    copy = Path(tempfile.mkdtemp(prefix="rar-tools-snapshot-"))
    try:
        if chroma.is_dir():
            shutil.copytree(chroma, copy / "chroma")
        client = open_persistent_client(copy / "chroma")
    except (OSError, MemoryStoreError) as exc:
        shutil.rmtree(copy, ignore_errors=True)
        raise DiskFaultError(
            f"{describe_problem(problem, chroma.parent)}, and its memory index could not be copied to a "
            f"temporary folder to be read ({exc}). Make the data folder writable or free some space"
        ) from exc
    log.warning(
        "%s: serving a read-only snapshot of its memories (copied to %s); adding and removing are refused "
        "until the server is restarted with the folder writable",
        describe_problem(problem, chroma.parent),
        copy,
    )
    return LocalIndex(client, problem, copy)
