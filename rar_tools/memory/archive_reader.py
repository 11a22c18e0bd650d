"""Reading a `.rar-memory` archive (format: `archive.py`), refusing anything unsafe, damaged or
incompatible with a clear `ArchiveError` before its caller writes anything."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
from PIL import Image

from rar_tools.errors import ArchiveError, RarToolsError
from rar_tools.identity import EncoderIdentity
from rar_tools.jsontext import parse_json
from rar_tools.limits import ENTRY_KINDS
from rar_tools.memory.archive import (
    CHUNK_ROWS,
    COPY_BYTES,
    EMBEDDINGS,
    ENTRIES,
    FORMAT,
    FORMAT_VERSION,
    IMAGE_MEMBER,
    MANIFEST,
    MAX_DIM,
    MAX_ENTRIES,
    MAX_IMAGE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_ROW_BYTES,
    ROW_FIELDS,
    TEXT_SHA,
    Row,
    image_member,
)
from rar_tools.validation import check_label, check_memory_name

MAX_HEADER_BYTES = 4096  # of embeddings.npy
SHA256 = re.compile(r"[0-9a-f]{64}")
NORM_TOLERANCE = 1e-2


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Damage found while reading (bad CRC, broken deflate stream, early end) as an `ArchiveError`."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ArchiveError(f"the archive is damaged ({what}: {exc}); nothing was imported") from exc


def open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise ArchiveError(f"archive {str(path)!r} does not exist or is not a file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(
            f"{str(path)!r} is not a rar-memory archive: not a readable zip file ({exc}); truncated or damaged?"
        ) from exc


def refuse_unsafe(info: zipfile.ZipInfo) -> None:
    """Refuse a member that is a link, an absolute path, leaves the archive or is encrypted."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"archive member {name!r} is a symbolic link; links are refused")
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise ArchiveError(f"archive member {name!r} is an absolute path; refused")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise ArchiveError(f"archive member {name!r} leaves the archive's folder ('..'); refused")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"archive member {name!r} is encrypted; refused")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(f"archive member {name!r} uses an unsupported compression; refused")


def checked_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The members by name, each safe and expected, none twice."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        refuse_unsafe(info)
        name = info.filename
        if name not in (MANIFEST, ENTRIES, EMBEDDINGS) and not IMAGE_MEMBER.fullmatch(name):
            raise ArchiveError(f"archive member {name!r} is not part of the rar-memory format; refused")
        if name in members:
            raise ArchiveError(f"archive member {name!r} appears twice; refused")
        members[name] = info
    for required in (MANIFEST, ENTRIES, EMBEDDINGS):
        if required not in members:
            raise ArchiveError(f"the archive has no {required}: not a complete rar-memory archive")
    return members


def field(mapping: Any, key: str, kind: type, where: str = "manifest") -> Any:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ArchiveError(f"the {where} has no valid {key!r}")
    return value


def read_manifest(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    """The manifest, with its format and version checked first."""
    if info.file_size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"manifest.json claims {info.file_size} bytes (at most {MAX_MANIFEST_BYTES}); refused")
    with reading(MANIFEST):
        text = archive.read(info)
    try:
        manifest = parse_json(text)
    except ValueError as exc:
        raise ArchiveError(f"manifest.json is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError("manifest.json does not describe a rar-memory archive (format is not 'rar-memory')")
    version = field(manifest, "format_version", int)
    if version > FORMAT_VERSION:
        raise ArchiveError(
            f"the archive was written by a newer rar-tools (format version {version}); this rar-tools reads "
            f"format version {FORMAT_VERSION} and older: upgrade rar-tools to import it"
        )
    return manifest


def manifest_identity(manifest: dict[str, Any]) -> EncoderIdentity:
    encoder = field(manifest, "encoder", dict)
    dim = field(encoder, "dim", int, "manifest's encoder")
    if not 1 <= dim <= MAX_DIM:
        raise ArchiveError(f"the manifest's encoder dimension {dim} is out of range (1-{MAX_DIM})")
    model = field(encoder, "model", str, "manifest's encoder")
    return EncoderIdentity(model=model, pretrained=field(encoder, "pretrained", str, "manifest's encoder"), dim=dim)


def checked_sizes(manifest: dict, members: dict[str, zipfile.ZipInfo], count: int, dim: int) -> dict[str, dict]:
    """The manifest's member records, matching the members' sizes and within bounds, so that no
    member is read beyond what its records allow (a member inflating to gigabytes is refused unread)."""
    listed = field(manifest, "members", dict)
    if set(listed) != set(members) - {MANIFEST}:
        extra = sorted(set(listed) ^ (set(members) - {MANIFEST}))[:3]
        raise ArchiveError(f"the manifest and the archive list different members (e.g. {extra}); refused")
    bounds = {ENTRIES: count * MAX_ROW_BYTES, EMBEDDINGS: MAX_HEADER_BYTES + count * dim * 4}
    for name, record in listed.items():
        where = f"record of {name}"
        size, digest = field(record, "bytes", int, where), field(record, "sha256", str, where)
        if not SHA256.fullmatch(digest):
            raise ArchiveError(f"the manifest's checksum of {name!r} is not a sha256")
        if members[name].file_size != size:
            raise ArchiveError(
                f"archive member {name!r} holds {members[name].file_size} bytes, the manifest says {size}; refused"
            )
        if size > bounds.get(name, MAX_IMAGE_BYTES):
            raise ArchiveError(f"archive member {name!r} is {size} bytes, more than its contents allow; refused")
    return listed


def sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(COPY_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def checked_row(line: bytes, number: int, images: dict[str, zipfile.ZipInfo]) -> Row:
    """One entry of entries.jsonl, every field checked."""
    where = f"entries.jsonl line {number}"
    try:
        row = parse_json(line)
    except ValueError as exc:
        raise ArchiveError(f"{where} is not JSON ({exc})") from exc
    if not isinstance(row, dict) or set(row) - set(ROW_FIELDS):
        raise ArchiveError(f"{where} is not an entry (unknown fields {sorted(set(row) - set(ROW_FIELDS))[:3]})")
    if not all(isinstance(value, str) for value in row.values()):
        raise ArchiveError(f"{where}: every field is a string")
    try:
        for level in ("label", "category", "parent"):
            if level in row and check_label(row[level], level) != row[level]:
                raise ArchiveError(f"{where}: {level} {row[level][:40]!r} is not in its cleaned form")
    except ArchiveError:
        raise
    except RarToolsError as exc:
        raise ArchiveError(f"{where}: {exc}") from exc
    kind, sha = row.get("kind"), row.get("sha256", "")
    if kind not in ENTRY_KINDS:
        raise ArchiveError(f"{where}: kind must be one of {ENTRY_KINDS}")
    if kind == "image":
        if not SHA256.fullmatch(sha) or row.get("image_file") != image_member(sha) or image_member(sha) not in images:
            raise ArchiveError(f"{where}: an image entry needs a sha256 and its exemplar file in the archive")
    elif not TEXT_SHA.fullmatch(sha) or "image_file" in row:
        raise ArchiveError(f"{where}: a label text entry has a content hash and no image file")
    return row


class MemoryArchive:
    """A `.rar-memory` file opened for reading. Opening checks its members, sizes and manifest;
    `verify` checks every checksum, entry and exemplar; `pages` then yields the entries."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.zip = open_zip(self.path)
        try:
            self.members = checked_members(self.zip)
            self.manifest = read_manifest(self.zip, self.members[MANIFEST])
            self.identity = manifest_identity(self.manifest)
            self.count = field(field(self.manifest, "counts", dict), "entries", int, "manifest's counts")
            if not 0 <= self.count <= MAX_ENTRIES:
                raise ArchiveError(f"the manifest counts {self.count} entries (at most {MAX_ENTRIES}); refused")
            self.records = checked_sizes(self.manifest, self.members, self.count, self.identity.dim)
            self.memory = check_memory_name(field(self.manifest, "memory", str))
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self) -> MemoryArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()

    @property
    def images(self) -> dict[str, zipfile.ZipInfo]:
        return {name: info for name, info in self.members.items() if IMAGE_MEMBER.fullmatch(name)}

    def verify(self) -> None:
        """Check every member against its sha256, every entry and embedding, and that every
        exemplar decodes as an image and is used by an entry."""
        for name, record in self.records.items():
            with reading(name), self.zip.open(self.members[name]) as stream:
                if sha256_of(stream) != record["sha256"]:
                    raise ArchiveError(f"archive member {name!r} does not match its checksum; damaged archive")
        used = {row["image_file"] for rows, _ in self.pages() for row in rows if "image_file" in row}
        if used != set(self.images):
            raise ArchiveError("the archive holds exemplar files no entry uses; refused")
        for name in used:
            try:
                with Image.open(io.BytesIO(self.image_bytes(name))) as image:
                    image.verify()
            except (OSError, SyntaxError, ValueError) as exc:
                raise ArchiveError(f"archive member {name!r} is not a readable image ({exc})") from exc

    def image_bytes(self, member: str) -> bytes:
        with reading(member):
            return self.zip.read(self.members[member])

    def pages(self) -> Iterator[tuple[list[Row], np.ndarray]]:
        """The entries and their embeddings, `CHUNK_ROWS` at a time, each checked."""
        dim = self.identity.dim
        with (
            reading(ENTRIES),
            self.zip.open(self.members[ENTRIES]) as rows,
            self.zip.open(self.members[EMBEDDINGS]) as vectors,
        ):
            check_npy_header(vectors, self.count, dim)
            number = 0
            while number < self.count:
                size = min(CHUNK_ROWS, self.count - number)
                chunk = []
                for _ in range(size):
                    number += 1
                    line = rows.readline(MAX_ROW_BYTES + 1)
                    if not line.endswith(b"\n"):
                        raise ArchiveError(f"entries.jsonl line {number} is missing or too long")
                    chunk.append(checked_row(line, number, self.members))
                yield chunk, checked_vectors(vectors.read(size * dim * 4), size, dim, number)
            if rows.read(1) or vectors.read(1):
                raise ArchiveError(f"the archive holds more than the {self.count} entries its manifest counts")


def check_npy_header(stream: IO[bytes], count: int, dim: int) -> None:
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream, max_header_size=MAX_HEADER_BYTES)
    except (ValueError, EOFError) as exc:
        raise ArchiveError(f"embeddings.npy is not a NumPy array file ({exc})") from exc
    if shape != (count, dim) or fortran or dtype != np.dtype("<f4"):
        raise ArchiveError(f"embeddings.npy is {dtype} {shape}; the manifest says float32 ({count}, {dim})")


def checked_vectors(data: bytes, rows: int, dim: int, last: int) -> np.ndarray:
    if len(data) != rows * dim * 4:
        raise ArchiveError("embeddings.npy ends early: fewer embeddings than entries")
    vectors = np.frombuffer(data, dtype="<f4").reshape(rows, dim)
    norms = np.linalg.norm(vectors, axis=1)
    if not np.isfinite(vectors).all() or np.abs(norms - 1.0).max(initial=0.0) > NORM_TOLERANCE:
        raise ArchiveError(f"embeddings.npy rows up to {last} are not unit-length embeddings")
    return vectors.astype(np.float32)
