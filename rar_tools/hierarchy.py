"""Hierarchical labels (DetCLIPv3's phrase | category | parent): probabilities of the coarser levels.

A fine label's probability is its share among the candidates (a softmax over the retrieved labels'
scores, or the ranker's probabilities after ranking); a category's probability is the sum over the
candidates in it, likewise for a parent. An agent unsure of the species can so fall back to the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Level = Literal["label", "category", "parent"]
LEVELS: tuple[Level, ...] = ("label", "category", "parent")


@dataclass(frozen=True)
class FineLabel:
    """A candidate label with its probability and its coarser levels (None where it has none)."""

    label: str
    probability: float
    category: str | None = None
    parent: str | None = None

    def name_at(self, level: Level) -> str | None:
        return getattr(self, level)


@dataclass(frozen=True)
class GroupProbability:
    """One name at one level: the summed probability of the fine labels under it."""

    level: Level
    name: str
    probability: float
    labels: tuple[str, ...]


def group_probabilities(fine: Sequence[FineLabel], level: Level) -> list[GroupProbability]:
    """Probabilities summed per name at `level`, most probable first; labels without that level are left out."""
    groups: dict[str, list[FineLabel]] = {}
    for item in fine:
        name = item.name_at(level)
        if name is not None:
            groups.setdefault(name, []).append(item)
    summed = [
        GroupProbability(level, name, sum(m.probability for m in members), tuple(m.label for m in members))
        for name, members in groups.items()
    ]
    return sorted(summed, key=lambda g: g.probability, reverse=True)


def finest_confident(fine: Sequence[FineLabel], min_confidence: float) -> GroupProbability | None:
    """The best name at the finest level whose probability reaches `min_confidence`: the label, else
    its category, else its parent; None when no level is that sure."""
    for level in LEVELS:
        groups = group_probabilities(fine, level)
        if groups and groups[0].probability >= min_confidence:
            return groups[0]
    return None
