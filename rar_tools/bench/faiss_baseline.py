"""The retrieve section's reference column: faiss `IndexHNSWFlat` (inner product, M = 64, the RAR
reference code's index) over the same exemplars, searched with the same distinct-label widening
as `retrieval.nearest_hits_by_label`, at several efSearch values; recall against exact search.

faiss-cpu is optional (the `fast` extra): without it the column is left out, with a note.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from rar_tools.bench.data import label_recall
from rar_tools.bench.timing import summarise
from rar_tools.retrieval import FIRST_WIDTH, WIDEN_FACTOR

M = 64
EF_CONSTRUCTION = 40  # faiss' default
EF_SEARCH = (16, 64, 256)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def distinct_labels(index, labels: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """The first k distinct labels of the nearest exemplars, widening the neighbour list (64, 256, ...)
    until k are found or every exemplar is in it."""
    n = max(FIRST_WIDTH, 4 * k)
    while True:
        _, found = index.search(query[None, :], min(n, index.ntotal))
        ordered = labels[found[0][found[0] >= 0]]
        distinct = list(dict.fromkeys(ordered.tolist()))
        if len(distinct) >= k or n >= index.ntotal:
            return distinct[:k]
        n *= WIDEN_FACTOR


def measure(
    vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray, exact: Sequence[Sequence[int]], k: int
) -> dict:
    """Build time, and per efSearch the p50 / p95 per query (ms) and label recall@k against `exact`."""
    import faiss

    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    figures: dict = {"build_s": time.perf_counter() - started, "M": M, "by_ef_search": {}}
    for ef in EF_SEARCH:
        index.hnsw.efSearch = ef
        seconds, recalls = [], []
        for query, truth in zip(queries, exact):
            start = time.perf_counter()
            found = distinct_labels(index, labels, query, k)
            seconds.append(time.perf_counter() - start)
            recalls.append(label_recall(found, list(truth), k))
        figures["by_ef_search"][str(ef)] = {**summarise(seconds), "recall": float(np.mean(recalls))}
    return figures


def at_equal_recall(figures: dict, recall: float) -> tuple[str, dict] | None:
    """The fastest efSearch whose recall reaches `recall` (else the most accurate one)."""
    runs = sorted(figures["by_ef_search"].items(), key=lambda item: item[1]["p50_ms"])
    reaching = [run for run in runs if run[1]["recall"] >= recall - 1e-9]
    return reaching[0] if reaching else max(runs, key=lambda item: item[1]["recall"], default=None)
