"""Disk faults of the data folder, named: a read-only folder or a full disk, found before a write
(so that a refused call changes nothing) and recognised in the errors of a write that fails anyway.

`folder_problem` looks before writing: 'read-only' (a read-only mount, or no write permission) or
'full' (less than `MIN_FREE_BYTES` free). `disk_faults` turns the `OSError`s and the Chroma errors of
a failed write into a `DiskFaultError` that says which. Light to import: no chromadb.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rar_tools.errors import DiskFaultError, RarToolsError

Problem = Literal["read-only", "full"]

MIN_FREE_BYTES = 4 * 2**20  # below this a data folder counts as full: Chroma's journal needs room to write
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What Chroma (SQLite, its segment writers) says on a read-only or full disk
READ_ONLY_TEXT = ("readonly database", "read-only file system", "permission denied")
FULL_TEXT = ("disk is full", "no space left", "disk quota exceeded", "failed to apply logs to the hnsw")


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write on the file system of `folder`."""
    return shutil.disk_usage(folder).free


def folder_problem(folder: Path) -> Problem | None:
    """Why files cannot be written in `folder` (an existing folder), or None if they can. A folder
    this process cannot even look at counts as read-only."""
    try:
        read_only_mount = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        if read_only_mount or not os.access(folder, os.W_OK | os.X_OK):
            return "read-only"
        return "full" if free_bytes(folder) < MIN_FREE_BYTES else None
    except OSError:
        return "read-only"


def problem_of(exc: BaseException) -> Problem | None:
    """'read-only' or 'full' when `exc` (an `OSError` or a Chroma error) says so."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return "read-only" if exc.errno in READ_ONLY_ERRNOS else "full" if exc.errno in FULL_ERRNOS else None
    text = str(exc).lower()
    if any(part in text for part in READ_ONLY_TEXT):
        return "read-only"
    if any(part in text for part in FULL_TEXT):
        return "full"
    return None


def describe_problem(problem: Problem, data_dir: Path, folder: Path | None = None) -> str:
    """'the data folder '...' is read-only' / '... is full (N bytes free)', naming `folder` (a folder
    inside `data_dir`, or on another file system mounted there) when it is the one at fault."""
    inside = f" (its folder {str(folder)!r})" if folder is not None and folder != data_dir else ""
    if problem == "full":
        free = free_bytes(folder or data_dir)
        return f"the data folder {str(data_dir)!r}{inside} is full ({free:,} bytes free)"
    return f"the data folder {str(data_dir)!r}{inside} is read-only"


def refusal(problem: Problem, data_dir: Path, folder: Path, doing: str) -> DiskFaultError:
    """The error refusing `doing` (e.g. 'adding to memory 'm'') before anything was written."""
    fix = "free some space" if problem == "full" else "make it writable"
    return DiskFaultError(
        f"{describe_problem(problem, data_dir, folder)}: {doing} refused, nothing changed. To write, {fix}"
    )


@contextmanager
def disk_faults(data_dir: Path, doing: str, folders: Sequence[Path] = (), then: str = "") -> Iterator[None]:
    """Turn a failed write's read-only or full-disk error into a `DiskFaultError` naming the data
    folder's condition (and which of `folders` has it, if one does now), what was being done, and
    `then` (what the caller can do); other errors pass unchanged."""
    try:
        yield
    except RarToolsError:
        raise
    except Exception as exc:
        problem = problem_of(exc)
        if problem is None:
            raise
        at_fault = next((f for f in folders if f.is_dir() and folder_problem(f) == problem), None)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        advice = f"; {then}" if then else ""
        message = f"{describe_problem(problem, data_dir, at_fault)}: {doing} failed ({reason}){advice}"
        raise DiskFaultError(message) from exc


@dataclass(frozen=True)
class WriteGuard:
    """The write checks of one store: its data folder, the folders its writes change (the exemplar
    copies' and, for an embedded index, the index's), and `read_only`, the reason its index is read
    from a snapshot (then every write is refused)."""

    data_dir: Path
    images_dir: Path
    index_dir: Path | None
    read_only: Problem | None = None

    def folders(self) -> list[Path]:
        """The folders a write changes (the data folder until the images folder exists)."""
        folders = [self.images_dir if os.path.isdir(self.images_dir) else self.data_dir]
        return folders + ([self.index_dir] if self.index_dir is not None else [])

    def problem(self, freeing: bool = False) -> tuple[Problem, Path] | None:
        """Why a write cannot be done now, and the folder at fault: the snapshot's reason, or a
        read-only folder, or a full one (unless the write is `freeing` space)."""
        if self.read_only is not None:
            return self.read_only, self.index_dir or self.data_dir
        for folder in self.folders():
            problem = folder_problem(folder)
            if problem == "read-only" or (problem == "full" and not freeing):
                return problem, folder
        return None

    def check(self, doing: str, freeing: bool = False) -> None:
        """Refuse `doing` with a `DiskFaultError` naming the condition when `problem` finds one."""
        found = self.problem(freeing)
        if found is None:
            return
        error = refusal(found[0], self.data_dir, found[1], doing)
        if self.read_only is not None:
            raise DiskFaultError(f"{error} and restart the server (its memories are served from a read-only copy)")
        raise error

    def faults(self, doing: str, then: str = "") -> AbstractContextManager[None]:
        """`disk_faults` for a write of this store."""
        return disk_faults(self.data_dir, doing, self.folders(), then)


def add_failure(exc: DiskFaultError, stored: Sequence[str]) -> DiskFaultError:
    """`exc` of a failed add, saying what it stored before failing."""
    if not stored:
        return DiskFaultError(f"{exc}; nothing was stored")
    return DiskFaultError(
        f"{exc}; {len(stored)} entries were stored before it failed: adding the same again completes the add"
    )
