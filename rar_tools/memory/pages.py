"""Pages of a label listing: labels most first (then by name), a page at a time, with an opaque
cursor naming the last label given, so that the next page starts after it."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from rar_tools.errors import MemoryStoreError
from rar_tools.jsontext import parse_json


def order_key(label: str, count: int) -> tuple[int, str]:
    return (-count, label)


def encode_cursor(label: str, count: int) -> str:
    """The cursor after (`label`, `count`): URL-safe base64 of JSON, without padding or slashes."""
    return base64.urlsafe_b64encode(json.dumps([count, label]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(negated count, label) of a cursor `encode_cursor` made; refuses anything else."""
    try:
        count, label = parse_json(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(count, int) and isinstance(label, str):
            return order_key(label, count)
    except (ValueError, TypeError):
        pass
    raise MemoryStoreError(f"cursor {cursor[:40]!r} is not a cursor a label listing gave; start without one")


def label_page(counts: Mapping[str, int], limit: int, cursor: str | None = None) -> tuple[dict[str, int], str | None]:
    """Up to `limit` labels after `cursor` (most entries first, then by name), and the cursor of
    the page after them (None when no label follows)."""
    ordered = sorted(counts.items(), key=lambda item: order_key(*item))
    if cursor is not None:
        after = decode_cursor(cursor)
        ordered = [item for item in ordered if order_key(*item) > after]
    page = dict(ordered[:limit])
    more = len(ordered) > limit and limit > 0
    return page, encode_cursor(*ordered[limit - 1]) if more else None


def labels_after(counts: Mapping[str, int], cursor: str | None) -> int:
    """How many labels come after the page that `cursor` ends (0 for None: the last page)."""
    if cursor is None:
        return 0
    after = decode_cursor(cursor)
    return sum(1 for item in counts.items() if order_key(*item) > after)
