"""Errors a caller can fix. The server turns each into an MCP `ToolError` with the same message."""

from __future__ import annotations


class RarToolsError(Exception):
    """Base class for every error that carries a message meant for the caller."""


class ImageInputError(RarToolsError):
    """An image could not be read, decoded or accepted."""


class MemoryStoreError(RarToolsError):
    """A memory name, entry or operation was refused."""


class EncoderMismatchError(MemoryStoreError):
    """A memory was filled by a different CLIP encoder than the one loaded now."""


class ArchiveError(MemoryStoreError):
    """A memory archive (`.rar-memory`) was refused: unreadable, damaged, unsafe or incompatible."""


class RankerError(RarToolsError):
    """The ranker is unavailable, or ranking failed for a reason the caller can act on."""


class ModelLoadError(RarToolsError):
    """A model failed to load (missing weights offline, out of GPU memory, bad path)."""


def describe(value: object, limit: int = 60) -> str:
    """A short, safe rendering of a caller's value for error messages: quoted, escaped, capped."""
    if not isinstance(value, str):
        return repr(value)[:limit]
    text = value if len(value) <= limit else value[:limit] + f"... ({len(value)} chars)"
    return repr(text)


class RegionError(RarToolsError):
    """A box or region option was refused (malformed, outside the image, too small)."""


class DetectorError(RarToolsError):
    """Object detection was refused (bad queries, unsupported detector model)."""


class SegmentationError(RarToolsError):
    """Segmentation was refused (no labels, too many, an image too small to segment)."""


class DescriptionError(RarToolsError):
    """A region description was refused (bad views, a ranker that cannot describe)."""


class DiskFaultError(MemoryStoreError):
    """The data folder is read-only or full: a write was refused or failed (the message says which)."""


class ExemplarFileError(MemoryStoreError):
    """The stored copy of an exemplar image is missing, unreadable or damaged."""
