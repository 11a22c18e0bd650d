"""Names and ids: a memory's Chroma collection name, and deterministic entry ids."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TypeVar

from rar_tools.limits import EntryKind
from rar_tools.validation import check_memory_name

COLLECTION_PREFIX = "rar-"

T = TypeVar("T")


def collection_name(memory: str) -> str:
    """The Chroma collection of memory `memory` (a checked name: Chroma's own rule is wider)."""
    return COLLECTION_PREFIX + check_memory_name(memory)


def memory_of(collection_name: str) -> str | None:
    """The memory a collection name belongs to, or None for a collection that is not ours."""
    if collection_name.startswith(COLLECTION_PREFIX):
        return collection_name[len(COLLECTION_PREFIX) :]
    return None


def entry_id(memory: str, kind: EntryKind, sha256: str, label: str) -> str:
    """Deterministic id: the same content with the same label in the same memory is one entry."""
    key = "\x00".join((memory, kind, sha256, label)).encode()
    return hashlib.sha256(key).hexdigest()[:32]


def chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
