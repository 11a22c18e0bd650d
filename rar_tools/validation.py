"""Checks of caller values that need no model: each raises the stage's `RarToolsError` with a
message naming the argument, the rule and the value given. Light to import (no numpy, no torch)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from rar_tools import limits
from rar_tools.errors import (
    DetectorError,
    MemoryStoreError,
    RankerError,
    RarToolsError,
    RegionError,
    SegmentationError,
    describe,
)


def check_memory_name(name: Any) -> str:
    """A memory name: 1-64 of letters, digits, '.', '_' and '-', alphanumeric at both ends."""
    if not isinstance(name, str) or not limits.MEMORY_NAME.fullmatch(name) or ".." in name:
        raise MemoryStoreError(
            f"memory name {describe(name)} is invalid: use 1-{limits.MAX_MEMORY_NAME_CHARS} letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit, without '..'"
        )
    return name


# Characters that show nothing: format characters (zero-width space, joiners, BOM...), combining
# marks without a base, separators, unassigned code points, and the letters that are blank fillers.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Cn", "Mn", "Me", "Zs", "Zl", "Zp"})
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_visible(ch: str) -> bool:
    return unicodedata.category(ch) not in INVISIBLE_CATEGORIES and ch not in BLANK_LETTERS


def check_label(label: Any, what: str = "label", error: type[RarToolsError] = MemoryStoreError) -> str:
    """A label: 1-200 characters, at least one of them visible, in Unicode NFC (so 'café' typed
    with a composed or a combining accent is one label), surrounding and repeated whitespace collapsed."""
    if not isinstance(label, str):
        raise error(f"{what} must be a string")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in label):
        raise error(f"{what} {label[:60]!r} contains control characters")
    if any(unicodedata.category(ch) == "Cs" for ch in label):
        raise error(f"{what} {label[:60]!r} contains lone surrogates, which are not text")
    cleaned = " ".join(unicodedata.normalize("NFC", label).split())
    if not cleaned:
        raise error(f"{what} is empty")
    if not any(is_visible(ch) for ch in cleaned):
        raise error(f"{what} {cleaned[:60]!r} has no visible character (only zero-width, format or blank characters)")
    if len(cleaned) > limits.MAX_LABEL_CHARS:
        raise error(f"{what} {cleaned[:40]!r}... has {len(cleaned)} characters; the limit is {limits.MAX_LABEL_CHARS}")
    return cleaned


def optional_label(value: str | None, what: str) -> str | None:
    """A coarser level (category, parent): None when absent or blank, else a checked label."""
    return None if value is None or not str(value).strip() else check_label(value, what)


def check_int(value: Any, name: str, low: int, high: int, error: type[RarToolsError]) -> int:
    """An integer (not a bool) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def check_fraction(value: Any, name: str, error: type[RarToolsError]) -> float:
    """A number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise error(f"{name} must be from 0 to 1, got {value!r}")
    return float(value)


def check_k(k: Any, limit: int = limits.MAX_K) -> int:
    """The number of distinct labels to retrieve."""
    return check_int(k, "k", 1, limit, MemoryStoreError)


def check_views(views: Any) -> int:
    if isinstance(views, bool) or not isinstance(views, int) or not 1 <= views <= limits.MAX_VIEWS:
        raise RegionError(f"views must be an integer from 1 (tight view only) to {limits.MAX_VIEWS}, got {views!r}")
    return views


def check_ranker_view(view: Any) -> str:
    if view not in limits.RANKER_VIEWS:
        raise RegionError(f"ranker_view must be 'crop' or 'prompt', got {view!r}")
    return view


def check_confidence(value: Any) -> float:
    return check_fraction(value, "min_confidence", RegionError)


def check_boxes(boxes: Any) -> Any:
    """A list of 1-100 boxes (each box is checked against the image later)."""
    if not isinstance(boxes, (list, tuple)) or not 1 <= len(boxes) <= limits.MAX_BOXES:
        raise RegionError(f"give a list of 1 to {limits.MAX_BOXES} boxes, got {boxes!r:.80}")
    return boxes


def check_candidates(candidates: Any) -> list[str]:
    """2-50 distinct, valid candidate labels."""
    bounds = (limits.MIN_CANDIDATES, limits.MAX_CANDIDATES)
    return distinct_labels(candidates, "candidate", "to rank", bounds, RankerError)


def distinct_labels(
    values: Any, what: str, purpose: str, bounds: tuple[int, int], error: type[RarToolsError]
) -> list[str]:
    """A list of `bounds[0]`-`bounds[1]` distinct, valid labels, each called a `what` in messages."""
    low, high = bounds
    if not isinstance(values, (list, tuple)) or not low <= len(values) <= high:
        count = len(values) if isinstance(values, (list, tuple)) else "no list of"
        raise error(f"give {low} to {high} {what}s {purpose}, got {count}")
    names = [check_label(value, what, error) for value in values]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise error(f"duplicate {what}s: {duplicates[:5]}; give each label once")
    return names


def check_queries(queries: Any) -> list[str]:
    """1-50 distinct, non-empty detector text queries, whitespace collapsed."""
    if not isinstance(queries, (list, tuple)) or not 1 <= len(queries) <= limits.MAX_QUERIES:
        raise DetectorError(f"give 1 to {limits.MAX_QUERIES} text queries (what to look for), got {queries!r:.80}")
    cleaned = [" ".join(str(q).split()) for q in queries]
    if not all(cleaned):
        raise DetectorError("a detector query is empty")
    if len(set(cleaned)) != len(cleaned):
        raise DetectorError("detector queries must be distinct")
    return cleaned


def check_detector_threshold(value: Any) -> float | None:
    return None if value is None else check_fraction(value, "threshold", DetectorError)


def check_max_boxes(value: Any) -> int:
    return check_int(value, "max_boxes", 1, limits.MAX_DETECTIONS, DetectorError)


def check_entry_ids(ids: Sequence[str] | None) -> list[str] | None:
    """At most 1000 entry ids, each given once (a repeated id is the same entry: kept once, in order)."""
    if ids is None:
        return None
    if not isinstance(ids, (list, tuple)) or len(ids) > limits.MAX_IDS_PER_REMOVE:
        raise MemoryStoreError(f"give at most {limits.MAX_IDS_PER_REMOVE} entry ids in a list")
    for entry in ids:
        if not isinstance(entry, str) or not entry or len(entry) > limits.MAX_ENTRY_ID_CHARS:
            raise MemoryStoreError(f"entry id {describe(entry)} is not an entry id")
    return list(dict.fromkeys(ids))


def check_segment_labels(labels: Any) -> list[str] | None:
    """None (labels from a memory), or 1-100 distinct, valid labels to segment."""
    if labels is None:
        return None
    return distinct_labels(labels, "label", "to segment", (1, limits.MAX_SEGMENT_LABELS), SegmentationError)


def check_optional_boxes(boxes: Any) -> Any:
    """None, or a list of 1-100 boxes."""
    return None if boxes is None else check_boxes(boxes)
