"""The `.rar-memory` archive: one memory as an open, documented file (docs/portability.md).

A zip file with these members and no others:

- `manifest.json`: `format` ("rar-memory"), `format_version`, the memory's name, the `encoder`
  (model, pretrained, dim), `counts`, and the byte size and sha256 of every other member;
- `entries.jsonl`: one JSON object per entry (`label`, `kind`, `sha256`, `added_at`, and `source`,
  `category`, `parent`, `image_file` when set), in the row order of
- `embeddings.npy`: the entries' embeddings, a float32 NumPy array of shape (entries, dim);
- `images/ab/<sha256>.jpg`: the exemplar copies the image entries point at, each once.

`MemoryArchive` checks an archive before its caller writes anything: member names (no absolute
paths, no `..`, no links, nothing unexpected), sizes against the manifest and against bounds (so a
member that inflates to gigabytes is refused unread), the format version, and then every checksum.
Member names are never used as paths: an exemplar is written where its sha256 says.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from rar_tools import __version__
from rar_tools.errors import ArchiveError
from rar_tools.identity import EncoderIdentity
from rar_tools.limits import ENTRY_KINDS
from rar_tools.memory.names import now

FORMAT = "rar-memory"
FORMAT_VERSION = 1
SUFFIX = ".rar-memory"
MANIFEST = "manifest.json"
ENTRIES = "entries.jsonl"
EMBEDDINGS = "embeddings.npy"
IMAGE_MEMBER = re.compile(r"images/([0-9a-f]{2})/(\1[0-9a-f]{62})\.jpg")
TEXT_SHA = re.compile(r"[0-9A-Za-z._:-]{1,128}")
ROW_FIELDS = ("label", "kind", "sha256", "added_at", "source", "category", "parent", "image_file")
MAX_ENTRIES = 5_000_000
MAX_DIM = 8192
MAX_ROW_BYTES = 8192  # one line of entries.jsonl
MAX_MANIFEST_BYTES = 512 * 2**20  # it lists a checksum per exemplar file
MAX_IMAGE_BYTES = 32 * 2**20
CHUNK_ROWS = 4096
COPY_BYTES = 2**20

Row = dict[str, Any]


def image_member(sha256: str) -> str:
    """The archive member (and the data-folder path) of the exemplar copy of `sha256`."""
    return f"images/{sha256[:2]}/{sha256}.jpg"


# -- writing -----------------------------------------------------------------------------------
class HashingWriter:
    """Counts and hashes what passes through to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.size, self.digest = out, 0, hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.size += len(data)
        self.digest.update(data)

    def record(self) -> dict[str, Any]:
        return {"bytes": self.size, "sha256": self.digest.hexdigest()}


def write_member(archive: zipfile.ZipFile, name: str, chunks: Iterable[bytes], compress: bool) -> dict[str, Any]:
    """Stream `chunks` into member `name`; returns its size and sha256."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    with archive.open(info, "w", force_zip64=True) as out:
        writer = HashingWriter(out)
        for chunk in chunks:
            writer.write(chunk)
    return writer.record()


def file_chunks(path: Path, skip: int = 0) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(skip)
        while chunk := handle.read(COPY_BYTES):
            yield chunk


def write_archive(
    target: Path,
    memory: str,
    identity: EncoderIdentity,
    pages: Iterable[tuple[list[Row], np.ndarray]],
    exemplar_file: Callable[[str], Path],
) -> dict[str, Any]:
    """Write the archive of a memory's entries (`pages` of rows and embeddings) to `target`,
    atomically (a temporary file renamed into place); returns its manifest. `exemplar_file` gives
    the stored copy of an image entry's sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".rar-export-") as tmp:
        rows_file, vectors_file = Path(tmp) / ENTRIES, Path(tmp) / "embeddings.f32"
        counts = spool_entries(pages, rows_file, vectors_file, identity.dim)
        partial = Path(tmp) / "archive.zip"
        with zipfile.ZipFile(partial, "w", allowZip64=True) as archive:
            members = {ENTRIES: write_member(archive, ENTRIES, file_chunks(rows_file), compress=True)}
            header = npy_header(counts["entries"], identity.dim)
            members[EMBEDDINGS] = write_member(
                archive, EMBEDDINGS, [header, *file_chunks(vectors_file)], compress=False
            )
            for sha in counts.pop("image_shas"):
                source = exemplar_file(sha)
                if not source.is_file():
                    raise ArchiveError(f"the exemplar file of {sha[:12]}... is missing from the data folder")
                members[image_member(sha)] = write_member(archive, image_member(sha), file_chunks(source), False)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "memory": memory,
                "encoder": {"model": identity.model, "pretrained": identity.pretrained, "dim": identity.dim},
                "counts": counts,
                "members": members,
                "created_at": now(),
                "created_by": f"rar-tools {__version__}",
            }
            text = json.dumps(manifest, indent=1, sort_keys=True).encode()
            write_member(archive, MANIFEST, [text], compress=True)
        os.replace(partial, target)
    return manifest


def spool_entries(pages: Iterable[tuple[list[Row], np.ndarray]], rows_file: Path, vectors_file: Path, dim: int) -> dict:
    """Write the rows as JSON lines and the embeddings as raw float32 to two files; returns the
    counts (entries, images, labels, kinds) and the exemplar shas to include."""
    entries, labels, kinds, shas = 0, set(), dict.fromkeys(ENTRY_KINDS, 0), set()
    with rows_file.open("wb") as rows_out, vectors_file.open("wb") as vectors_out:
        for rows, embeddings in pages:
            for row in rows:
                kept = {key: row[key] for key in ROW_FIELDS if row.get(key)}
                rows_out.write(json.dumps(kept, ensure_ascii=False).encode() + b"\n")
                labels.add(row["label"])
                kinds[row["kind"]] += 1
                if row.get("image_file"):
                    shas.add(row["sha256"])
            vectors_out.write(np.ascontiguousarray(embeddings, dtype="<f4").reshape(-1, dim).tobytes())
            entries += len(rows)
    return {"entries": entries, "images": len(shas), "labels": len(labels), "kinds": kinds, "image_shas": sorted(shas)}


def npy_header(rows: int, dim: int) -> bytes:
    """The `.npy` header of a little-endian float32 array of shape (rows, dim)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return buffer.getvalue()
