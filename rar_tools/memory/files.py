"""Exemplar files: content-addressed JPEG copies under `DATA_DIR/images/`, written atomically.

A copy is named by the sha256 of its source (`images/ab/abcd....jpg`), so one picture stored under
several labels or in several memories is one file. A copy is written to a temporary file
(`PARTIAL_PREFIX`), fsynced and renamed into place, and its folder is fsynced, before any entry
points at it; a killed process leaves at most a partial file, which the next store tidies away, or a
copy no entry references, which the next store collects (`orphans`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from PIL import Image

from rar_tools.errors import ExemplarFileError

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".tmp-"
SHA256 = re.compile(r"[0-9a-f]{64}")
IMAGES_FOLDER = "images"
READD = "; remove the entry and add the image again"


class Picture(Protocol):
    """Anything with decoded pixels and the sha256 that names them (`LoadedImage`, `ExemplarImage`)."""

    @property
    def image(self) -> Image.Image: ...

    @property
    def sha256(self) -> str: ...


def stored_image_path(images_dir: Path, sha256: str) -> Path:
    """Where the content-addressed copy of an image lives."""
    return images_dir / sha256[:2] / f"{sha256}.jpg"


def store_image(images_dir: Path, loaded: Picture, max_side: int) -> Path:
    """Keep a bounded JPEG copy of the image, written atomically (temporary file, fsync, rename);
    reuse an existing copy."""
    target = stored_image_path(images_dir, loaded.sha256)
    if target.is_file():
        return target
    copy = loaded.image.copy()
    copy.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    write_atomically(target, lambda handle: copy.save(handle, format="JPEG", quality=92))
    return target


def write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `target` through a temporary file in its folder: fsync, rename, fsync the folder, so a
    reader sees the whole file or none (a killed process leaves at most a `PARTIAL_PREFIX` file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX, suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_folder(target.parent)


def read_exemplar(path: Path, what: str) -> bytes:
    """The bytes of a stored exemplar copy, checked to decode; a missing, unreadable or damaged copy
    is an `ExemplarFileError` naming `what` (e.g. "exemplar entry 'ab12...'") and the problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ExemplarFileError(f"the stored copy of {what} is missing ({path.name}){READD}") from exc
    except OSError as exc:
        raise ExemplarFileError(f"the stored copy of {what} cannot be read: {exc.strerror or exc}") from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as exc:  # Pillow raises many types on damaged files
        reason = f"{type(exc).__name__}: {exc}"
        raise ExemplarFileError(f"the stored copy of {what} is damaged ({reason}){READD}") from exc
    return data


def thumbnail_jpeg(path: Path, max_side: int = 128, quality: int = 80, what: str = "an exemplar") -> bytes:
    """A small JPEG of a stored image, for showing in a host (`read_exemplar`'s errors)."""
    with Image.open(io.BytesIO(read_exemplar(path, what))) as image:
        small = image.convert("RGB")
        small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def sync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable before an entry points at it (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_partial_files(images_dir: Path) -> int:
    """Delete temporary exemplar files a killed process left half-written (they never got an
    entry); returns how many."""
    removed = 0
    for partial in images_dir.glob(f"*/{PARTIAL_PREFIX}*"):
        partial.unlink(missing_ok=True)
        log.info("removed a half-written exemplar file left by an interrupted add: %s", partial.name)
        removed += 1
    return removed


class ExemplarFiles:
    """The exemplar copies of one data folder. Callers serialise writes and deletions (the
    store's write lock), so that a copy is never deleted between its write and its entry."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.images_dir = data_dir / IMAGES_FOLDER

    def path(self, sha256: str) -> Path:
        """The absolute path of the copy of `sha256` (whether or not it exists)."""
        return stored_image_path(self.images_dir, sha256)

    def write(self, picture: Picture, max_side: int) -> str:
        """Write (or reuse) the copy of `picture`, durably; its path relative to the data folder,
        as entries record it."""
        return str(store_image(self.images_dir, picture, max_side).relative_to(self.data_dir))

    def write_copy(self, sha256: str, data: bytes) -> str:
        """Write (or reuse) the copy of `sha256` from its JPEG bytes as they are (an imported
        exemplar); its path relative to the data folder."""
        target = self.path(sha256)
        if not target.is_file():
            write_atomically(target, lambda handle: handle.write(data))
        return str(target.relative_to(self.data_dir))

    def stored_shas(self) -> Iterator[str]:
        """The sha256 of every stored copy (partial files excluded), folder by folder."""
        if not self.images_dir.is_dir():
            return
        for folder in sorted(self.images_dir.iterdir()):
            if folder.is_dir() and len(folder.name) == 2:
                yield from (p.stem for p in folder.glob("*.jpg") if SHA256.fullmatch(p.stem))

    def resolve(self, image_file: str) -> Path:
        """The absolute path of a copy recorded as `image_file` (relative to the data folder)."""
        return self.data_dir / image_file

    def tidy(self) -> int:
        """Delete partial files an interrupted add left behind."""
        return remove_partial_files(self.images_dir)

    def delete(self, shas: Iterable[str]) -> int:
        """Delete the copies of `shas` (the caller has checked no entry uses them); how many existed."""
        deleted = 0
        for sha in shas:
            path = self.path(sha)
            if path.exists():
                path.unlink(missing_ok=True)
                deleted += 1
        return deleted
