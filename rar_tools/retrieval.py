"""Retrieval: the k distinct labels nearest to a query embedding, with their scores and support.

A `Retriever` searches a memory through a narrow interface (`SearchableMemory`, which `MemoryStore`
provides) and keeps what it learns about each memory: the neighbour-list width a search for k
labels needed, forgotten whenever the memory's `generation` moves on (entries removed, memory dropped).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from rar_tools.identity import EncoderIdentity
from rar_tools.limits import EntryKind, LabelScore, RetrievalMode
from rar_tools.memory import Hit

LOGIT_SCALE = 100.0  # CLIP's learned temperature, used to turn similarities into probabilities
FIRST_WIDTH = 64  # neighbours in the first query; widened by WIDEN_FACTOR up to WIDEST
WIDEN_FACTOR = 4
WIDEST = 4096


class SearchableMemory(Protocol):
    """What retrieval needs of a memory store (`MemoryStore` provides it)."""

    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list[Hit]: ...

    def nearest_excluding(
        self,
        name: str,
        identity: EncoderIdentity,
        embedding: np.ndarray,
        kind: EntryKind,
        n: int,
        exclude_labels: Sequence[str],
    ) -> list[Hit]: ...

    def levels(self, name: str, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]: ...

    def kinds(self, name: str) -> set[EntryKind]: ...

    def generation(self, name: str) -> int: ...


@dataclass
class LabelCandidate:
    """One retrieved label: its ranking score, similarities per entry kind and supporting entries."""

    label: str
    score: float
    probability: float = 0.0
    image_similarity: float | None = None
    text_similarity: float | None = None
    support: int = 0
    entry_ids: list[str] = field(default_factory=list)
    category: str | None = None
    parent: str | None = None


@dataclass
class Retrieval:
    """Candidates best first, the entry kinds searched, and an honest note when fewer than k."""

    candidates: list[LabelCandidate]
    kinds: list[EntryKind]
    note: str | None = None

    def restricted(self, keep: Sequence[int]) -> Retrieval:
        """Only the candidates at `keep`, in their order, probabilities renormalised over them."""
        kept = [self.candidates[i] for i in sorted(keep)]
        total = sum(c.probability for c in kept) or 1.0
        kept = [replace(c, probability=c.probability / total) for c in kept]
        return Retrieval(candidates=kept, kinds=self.kinds, note=self.note)


def nearest_hits_by_label(
    store: SearchableMemory,
    memory: str,
    identity: EncoderIdentity,
    embedding: np.ndarray,
    kinds: Sequence[EntryKind],
    k: int,
    start_width: int,
) -> tuple[dict[EntryKind, dict[str, list[Hit]]], int]:
    """Neighbours grouped by kind and label, until each of `kinds` has k labels or the memory has no
    more; and the neighbour-list width that took.

    Many exemplars of one label can fill a whole neighbour list, so the list is widened (64, 256,
    1024, 4096 neighbours) from `start_width` (`Retriever.width`: at least 64 and 4k, and where the
    memory needed before, so a support count can grow with a memory's history). The list is never filtered: a Chroma
    metadata filter scans every entry, which cost 0.1-0.3 s per query at 100k entries. In a
    nearest-first list, the first k distinct labels are exactly the k labels with the best
    similarity. A kind still short at 4096 (a memory with fewer labels than k, or a kind far
    outnumbered) goes on with filtered queries that exclude the labels found.
    """
    n = start_width
    while True:
        hits = store.nearest(memory, identity, embedding, n)
        found = {kind: group_by_label(h for h in hits if h.kind == kind) for kind in kinds}
        short = [kind for kind in kinds if len(found[kind]) < k]
        if not short or len(hits) < n:
            return found, n
        if n >= WIDEST:
            for kind in short:
                exclude_found_labels(store, memory, identity, embedding, kind, k, found[kind])
            return found, n
        n = min(n * WIDEN_FACTOR, WIDEST)


def group_by_label(hits: Iterable[Hit]) -> dict[str, list[Hit]]:
    """Hits by label, in first-seen order (best first when the hits are)."""
    grouped: dict[str, list[Hit]] = {}
    for hit in hits:
        grouped.setdefault(hit.label, []).append(hit)
    return grouped


def exclude_found_labels(
    store: SearchableMemory,
    memory: str,
    identity: EncoderIdentity,
    embedding: np.ndarray,
    kind: EntryKind,
    k: int,
    found: dict[str, list[Hit]],
) -> None:
    """Add labels to `found` with filtered queries that exclude those already found; each round
    finds at least one new label or proves there is none."""
    while len(found) < k:
        hits = store.nearest_excluding(memory, identity, embedding, kind, FIRST_WIDTH, list(found))
        for label, more in group_by_label(hits).items():
            found.setdefault(label, []).extend(more)
        if len(hits) < FIRST_WIDTH:
            return


def label_score(similarities: Sequence[float], how: LabelScore) -> float:
    """Best similarity, or the sum of the top three."""
    ordered = sorted(similarities, reverse=True)
    return ordered[0] if how == "max" else float(sum(ordered[:3]))


def softmax(values: Sequence[float], scale: float = LOGIT_SCALE) -> list[float]:
    if not values:
        return []
    logits = np.asarray(values, dtype=np.float64) * scale
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()).tolist()


def candidates_for_kind(hits_by_label: dict[str, list[Hit]], kind: EntryKind, how: LabelScore) -> list[LabelCandidate]:
    """One candidate per label, scored from its hits of one kind, best first."""
    candidates = []
    for label, hits in hits_by_label.items():
        best = max(hits, key=lambda h: h.similarity)
        candidate = LabelCandidate(
            label=label,
            score=label_score([h.similarity for h in hits], how),
            support=len(hits),
            entry_ids=[h.id for h in hits],
        )
        setattr(candidate, f"{kind}_similarity", best.similarity)
        candidates.append(candidate)
    candidates.sort(key=lambda c: c.score, reverse=True)
    for candidate, p in zip(candidates, softmax([c.score for c in candidates])):
        candidate.probability = p
    return candidates


def fuse(per_kind: dict[EntryKind, list[LabelCandidate]]) -> list[LabelCandidate]:
    """Average the per-kind probabilities (a label missing from one kind counts 0 there)."""
    fused: dict[str, LabelCandidate] = {}
    for kind, candidates in per_kind.items():
        for c in candidates:
            into = fused.setdefault(c.label, LabelCandidate(label=c.label, score=0.0))
            into.score += c.probability / len(per_kind)
            into.support += c.support
            into.entry_ids += c.entry_ids
            setattr(into, f"{kind}_similarity", getattr(c, f"{kind}_similarity"))
    return sorted(fused.values(), key=lambda c: c.score, reverse=True)


def searchable_kinds(held: set[EntryKind], mode: RetrievalMode) -> list[EntryKind]:
    """The entry kinds `mode` searches among those a memory holds (`MemoryStore.kinds`)."""
    return [kind for kind in ("image", "text") if mode in (kind, "auto") and kind in held]


def scaled(hits_by_label: dict[str, list[Hit]], scale: float) -> dict[str, list[Hit]]:
    """The same hits with similarities multiplied by `scale`."""
    if scale == 1.0:
        return hits_by_label
    return {label: [replace(h, similarity=h.similarity * scale) for h in hits] for label, hits in hits_by_label.items()}


def fuse_views(embeddings: np.ndarray, weights: Sequence[float]) -> tuple[np.ndarray, float]:
    """The unit direction of the weighted sum of view embeddings, and that sum's length."""
    total = (np.asarray(weights, np.float64)[:, None] * embeddings.astype(np.float64)).sum(axis=0)
    length = float(np.linalg.norm(total))
    if length < 1e-12:
        raise ValueError("the weighted view embeddings cancel out; give positive weights")
    return (total / length).astype(np.float32), length


def ranked_candidates(
    found: dict[EntryKind, dict[str, list[Hit]]], k: int, how: LabelScore, scale: float
) -> list[LabelCandidate]:
    """The k best labels of the hits found, with probabilities over them: a softmax of similarities
    for one kind, the renormalised fused probabilities for two."""
    per_kind = {kind: candidates_for_kind(scaled(hits, scale), kind, how) for kind, hits in found.items()}
    if len(per_kind) == 1:
        candidates = next(iter(per_kind.values()))[:k]
        probabilities = softmax([c.score for c in candidates])
    else:
        candidates = fuse(per_kind)[:k]
        total = sum(c.score for c in candidates) or 1.0
        probabilities = [c.score / total for c in candidates]
    for c, p in zip(candidates, probabilities):
        c.probability = p
    return candidates


def add_levels(store: SearchableMemory, memory: str, candidates: list[LabelCandidate]) -> None:
    """Set each candidate's category and parent from its best entry (one read for all)."""
    if not candidates:
        return
    levels = store.levels(memory, [c.entry_ids[0] for c in candidates])
    for c in candidates:
        c.category, c.parent = levels.get(c.entry_ids[0], (None, None))


class Retriever:
    """Label retrieval from the memories of one store, remembering per memory and k the
    neighbour-list width a search needed (keyed by the memory's `generation`, so widths learned
    before a removal are forgotten). Safe to share between threads."""

    def __init__(self, store: SearchableMemory) -> None:
        self.store = store
        self.widths: dict[tuple[str, int, int], int] = {}  # (memory, k, generation) -> width
        self._widths_lock = threading.Lock()

    def width(self, memory: str, k: int) -> int:
        """The neighbour-list width the next search of `memory` for k labels starts with."""
        return self._width(memory, k, self.store.generation(memory))

    def _width(self, memory: str, k: int, generation: int) -> int:
        return max(FIRST_WIDTH, 4 * k, self.widths.get((memory, k, generation), 0))

    def _learn_width(self, memory: str, k: int, generation: int, width: int) -> None:
        """Remember a width beyond the first (widths of older generations of `memory` are dropped)."""
        if width <= max(FIRST_WIDTH, 4 * k):
            return
        with self._widths_lock:
            for key in [key for key in self.widths if key[0] == memory and key[2] != generation]:
                del self.widths[key]
            key = (memory, k, generation)
            self.widths[key] = max(width, self.widths.get(key, 0))

    def retrieve(
        self,
        memory: str,
        identity: EncoderIdentity,
        embedding: np.ndarray,
        k: int = 5,
        mode: RetrievalMode = "auto",
        how: LabelScore = "max",
        scale: float = 1.0,
        kinds: Sequence[EntryKind] | None = None,
    ) -> Retrieval:
        """The k best distinct labels for a query embedding.

        `image` searches exemplar images (few-shot), `text` label texts (zero-shot), `auto` whichever
        the memory holds, fusing both by averaged probabilities when it holds both. Similarities are
        multiplied by `scale` (see `retrieve_fused`). `kinds`, when given, are the entry kinds
        `searchable_kinds` found for `mode` (callers searching many queries look them up once).
        """
        if kinds is None:
            kinds = searchable_kinds(self.store.kinds(memory), mode)
        kinds = list(kinds)
        found: dict[EntryKind, dict[str, list[Hit]]] = {}
        if kinds:
            generation = self.store.generation(memory)  # read before searching: a removal meanwhile moves it on
            start = self._width(memory, k, generation)
            found, width = nearest_hits_by_label(self.store, memory, identity, embedding, kinds, k, start)
            self._learn_width(memory, k, generation, width)
        candidates = ranked_candidates(found, k, how, scale)
        add_levels(self.store, memory, candidates)
        return Retrieval(candidates=candidates, kinds=kinds, note=shortfall_note(memory, mode, kinds, candidates, k))

    def retrieve_fused(
        self,
        memory: str,
        identity: EncoderIdentity,
        embeddings: np.ndarray,
        weights: Sequence[float],
        k: int = 5,
        mode: RetrievalMode = "auto",
        how: LabelScore = "max",
        kinds: Sequence[EntryKind] | None = None,
    ) -> Retrieval:
        """The k best distinct labels for several views of one query, fusing their similarity scores.

        An entry's fused similarity is the weighted sum of its cosine similarities to the views,
        sum_v w_v <e, q_v> = <e, sum_v w_v q_v>: linear in the query. So one search with the direction
        of sum_v w_v q_v ranks entries exactly by the fused similarity (cosine ranking ignores the
        query's length), and multiplying the similarities found by that sum's length gives the fused
        values themselves. This is exact, costs one search per entry kind whatever the number of
        views, and needs no per-view candidate lists that would leave a label one view missed without
        a score. Labels are then scored from their entries' fused similarities as in `retrieve`.
        """
        if len(embeddings) != len(weights):
            raise ValueError("give one weight per view embedding")
        direction, length = fuse_views(embeddings, weights)
        return self.retrieve(memory, identity, direction, k, mode, how, scale=length, kinds=kinds)

    def region_mode(self, memory: str, mode: RetrievalMode) -> RetrievalMode:
        """The search mode for a region (see `region_mode`)."""
        return region_mode(self.store, memory, mode)


def region_mode(store: SearchableMemory, memory: str, mode: RetrievalMode) -> RetrievalMode:
    """The search mode for a region: `auto` means label texts when the memory holds any (RAR
    retrieves regions image-to-text: crops are small and weak image-to-image queries), else images."""
    if mode != "auto":
        return mode
    return "text" if "text" in store.kinds(memory) else "image"


def shortfall_note(
    memory: str, mode: RetrievalMode, kinds: list[EntryKind], candidates: list[LabelCandidate], k: int
) -> str | None:
    if not kinds:
        wanted = {"image": "image exemplars", "text": "label texts", "auto": "entries"}[mode]
        return f"memory {memory!r} holds no {wanted}; add some with add_to_memory"
    if len(candidates) < k:
        return f"memory {memory!r} holds only {len(candidates)} distinct label(s) for mode {mode!r}; asked for k={k}"
    return None
