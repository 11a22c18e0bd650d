"""Seeded sampling: the n-shot memory per class and the query subset, identical on every machine.

Both take a prefix of a seeded shuffle, so they nest: the 1-shot images are among the 2-shot ones,
and the queries of `--limit 50` are the first 50 of `--limit 100`. Nesting lets one encoding of the
largest shot set serve every shot count, and lets a resumed run with a larger limit keep its work.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:  # datasets imports this module
    from rar_tools.evaluation.datasets import LabelledImage

T = TypeVar("T")
ShotSampler = Literal["seeded", "first"]


def seeded_shuffle(items: Sequence[T], seed: int, salt: str) -> list[T]:
    """A copy of `items` shuffled by a generator seeded from (seed, salt), independent of the
    Python hash seed and of the platform."""
    key = int.from_bytes(hashlib.sha256(f"{seed}\x00{salt}".encode()).digest()[:8], "big")
    shuffled = list(items)
    random.Random(key).shuffle(shuffled)
    return shuffled


def by_label(items: Sequence[LabelledImage]) -> dict[str, list[LabelledImage]]:
    """Items grouped by label, labels sorted, each group in the given order."""
    groups: dict[str, list[LabelledImage]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return dict(sorted(groups.items()))


def few_shot(train: Sequence[LabelledImage], shots: int, seed: int, how: ShotSampler = "seeded") -> list[LabelledImage]:
    """Up to `shots` train images per label (all of a label that has fewer), labels sorted: the first
    of a seeded shuffle, or (`how="first"`, the RAR reference code's way) the first in data set order."""
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    chosen = []
    for label, group in by_label(train).items():
        ordered = group if how == "first" else seeded_shuffle(group, seed, f"shots:{label}")
        chosen += ordered[:shots]
    return chosen


def query_subset(test: Sequence[LabelledImage], limit: int | None, seed: int) -> list[LabelledImage]:
    """All test images, or the first `limit` of a seeded shuffle of them."""
    if limit is None:
        return list(test)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return seeded_shuffle(test, seed, "queries")[:limit]
