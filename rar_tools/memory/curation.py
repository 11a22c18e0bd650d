"""Finding what to tidy in a memory: near-identical exemplars, and exemplars whose nearest
exemplars carry another label. Exact: all pairs of a memory's exemplar embeddings, a block of rows
at a time (bounded by `limits.MAX_CURATION_EXEMPLARS`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

BLOCK_ROWS = 1024


@dataclass(frozen=True)
class Exemplars:
    """A memory's image entries: ids, labels and unit embeddings, row by row."""

    ids: list[str]
    labels: list[str]
    embeddings: np.ndarray


@dataclass(frozen=True)
class Pair:
    first: int
    second: int
    similarity: float


@dataclass(frozen=True)
class Suspect:
    row: int
    suggested: str
    share: float
    neighbour_labels: list[str]


def similarity_blocks(embeddings: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, similarities of rows first.. to every row), a block of rows at a time; a row's
    similarity to itself is -inf."""
    for start in range(0, len(embeddings), BLOCK_ROWS):
        block = embeddings[start : start + BLOCK_ROWS] @ embeddings.T
        block[np.arange(len(block)), start + np.arange(len(block))] = -np.inf
        yield start, block


def near_duplicates(exemplars: Exemplars, threshold: float) -> list[Pair]:
    """Every pair (each once) with cosine similarity of at least `threshold`, most similar first."""
    pairs = []
    for start, block in similarity_blocks(exemplars.embeddings):
        rows, columns = np.nonzero(block >= threshold)
        for row, column in zip(rows + start, columns):
            if row < column:
                pairs.append(Pair(int(row), int(column), float(block[row - start, column])))
    return sorted(pairs, key=lambda p: (-p.similarity, p.first, p.second))


def likely_mislabelled(exemplars: Exemplars, neighbours: int, min_similarity: float) -> list[Suspect]:
    """Exemplars whose `neighbours` nearest exemplars mostly (at least half) carry one other label,
    largest share first. Only neighbours at least `min_similarity` close vote: an exemplar far from
    every other (a label's only example, say) conflicts with nothing."""
    m = min(neighbours, len(exemplars.ids) - 1)
    suspects = []
    if m < 1:
        return suspects
    for start, block in similarity_blocks(exemplars.embeddings):
        nearest = np.argpartition(-block, m - 1, axis=1)[:, :m]
        order = np.take_along_axis(block, nearest, axis=1).argsort(axis=1)[:, ::-1]
        for offset, columns in enumerate(np.take_along_axis(nearest, order, axis=1)):
            row = start + offset
            labels = [exemplars.labels[c] for c in columns]
            close = [exemplars.labels[c] for c in columns if block[offset, c] >= min_similarity]
            if not close:
                continue
            label, votes = Counter(close).most_common(1)[0]
            if label != exemplars.labels[row] and votes * 2 >= m:
                suspects.append(Suspect(row, label, votes / m, labels))
    return sorted(suspects, key=lambda s: (-s.share, s.row))


def read_exemplars(index: Any, collection: Any) -> Exemplars:
    """Every image entry of a memory's collection, with its embedding."""
    ids: list[str] = []
    labels: list[str] = []
    vectors: list[np.ndarray] = []
    for page_ids, metadatas, embeddings in index.embedding_pages(collection):
        keep = [row for row, metadata in enumerate(metadatas) if metadata["kind"] == "image"]
        ids += [page_ids[row] for row in keep]
        labels += [metadatas[row]["label"] for row in keep]
        vectors.append(embeddings[keep])
    dim = vectors[0].shape[1] if vectors else 0
    return Exemplars(ids, labels, np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32))
