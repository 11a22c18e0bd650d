"""Whether a memory already knows a proposed name: held (as a label, or as a category or parent of
one), near (its nearest label is similar enough) or none. Pure: the caller retrieves the candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rar_tools.limits import EntryKind
from rar_tools.ranking.parsing import normalise
from rar_tools.vision_schemas import MemoryMatch


class Retrieved(Protocol):
    """A retrieved label with its similarity (`retrieval.LabelCandidate`)."""

    label: str
    score: float
    category: str | None
    parent: str | None


def held_level(name: str, candidate: Retrieved, coarse: bool) -> str | None:
    """The level at which `candidate` carries `name` (case, spacing and punctuation aside): its label,
    its category, or (for a `coarse` name, a parent) its parent."""
    key = normalise(name)
    levels = [("label", candidate.label), ("category", candidate.category)]
    if coarse:
        levels.append(("parent", candidate.parent))
    return next((level for level, value in levels if value and normalise(value) == key), None)


def memory_match(
    name: str, candidates: Sequence[Retrieved], kind: EntryKind | None, near: float, coarse: bool = False
) -> MemoryMatch:
    """`name` against the labels retrieved for its text, nearest first (`near`: the similarity from
    which the nearest counts as near)."""
    for candidate in candidates:
        level = held_level(name, candidate, coarse)
        if level is not None:
            return MemoryMatch(
                name=name, status="held", level=level, label=candidate.label, similarity=candidate.score, kind=kind
            )
    if not candidates:
        return MemoryMatch(name=name, status="none", kind=kind)
    best = candidates[0]
    status = "near" if best.score >= near else "none"
    return MemoryMatch(name=name, status=status, label=best.label, similarity=best.score, kind=kind)
