"""Section `retrieve`: label retrieval from memories of growing size against exact brute-force search.

Exemplars are drawn in clusters per label (`data.ClusteredSpace`), spread evenly over the labels.
Latency is `Retriever.retrieve` per query (no image loading or encoding): cold on a freshly
opened store, then in steady state, after the store has read every label once (the server does
that in the background when it starts), on new queries.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

from rar_tools.bench import faiss_baseline
from rar_tools.bench.config import BenchConfig
from rar_tools.bench.context import BenchContext
from rar_tools.bench.data import ClusteredSpace, exact_top_labels, exemplar_labels, label_recall
from rar_tools.bench.report import SectionResult, Table, Target
from rar_tools.bench.timing import summarise, timed
from rar_tools.encoder import EncoderIdentity
from rar_tools.limits import DEFAULT_LIST_LABELS
from rar_tools.memory import HNSW_CONFIG, MemoryStore, NewEntry, open_http_client
from rar_tools.memory.pages import label_page
from rar_tools.retrieval import Retriever

log = logging.getLogger(__name__)
DIM = 512  # CLIP ViT-B/16
IDENTITY = EncoderIdentity(model="bench-clustered", pretrained="synthetic", dim=DIM)
TARGET_SIZE = 100_000
MAX_P50_MS = 10.0
MIN_RECALL_AT_5 = 0.99
MAX_LIST_MS = 100.0
MAX_FAISS_RATIO = 2.0
LIST_REPEATS = 20
BUILD_CHUNK = 10_000


def label_name(index: int) -> str:
    return f"label {index:04d}"


def entries(vectors: np.ndarray, labels: np.ndarray, first: int) -> list[NewEntry]:
    """Image entries with metadata as `add_images` writes it (hash, source path, exemplar file)."""
    out = []
    for offset, (vector, label) in enumerate(zip(vectors, labels)):
        sha = hashlib.sha256(f"{first + offset}".encode()).hexdigest()
        out.append(
            NewEntry(
                label=label_name(int(label)),
                kind="image",
                sha256=sha,
                embedding=vector,
                source=f"/photos/{label_name(int(label))}/{first + offset:06d}.jpg",
                image_file=f"images/{sha[:2]}/{sha}.jpg",
            )
        )
    return out


def build(store: MemoryStore, memory: str, vectors: np.ndarray, labels: np.ndarray) -> float:
    """Seconds to add every vector to a new memory, in chunks."""
    seconds = 0.0
    for start in range(0, len(vectors), BUILD_CHUNK):
        chunk = entries(vectors[start : start + BUILD_CHUNK], labels[start : start + BUILD_CHUNK], start)
        seconds += timed(lambda chunk=chunk: store.add(memory, IDENTITY, chunk))[0]
    return seconds


def search_pass(retriever: Retriever, memory: str, queries: np.ndarray, k: int) -> tuple[list[float], list[list[str]]]:
    """Seconds and labels of `Retriever.retrieve` for each query."""
    seconds, found = [], []
    for query in queries:
        s, result = timed(lambda query=query: retriever.retrieve(memory, IDENTITY, query, k, mode="image"))
        seconds.append(s)
        found.append([c.label for c in result.candidates])
    return seconds, found


def open_store(config: BenchConfig, folder: Path, hnsw: dict | None = None) -> MemoryStore:
    """The store under test: embedded in `folder`, or on the Chroma server of `--chroma-url`."""
    client = open_http_client(config.chroma_url) if config.chroma_url else None
    return MemoryStore(folder, client, hnsw=hnsw)


def measure_size(ctx: BenchContext, size: int, rng: np.random.Generator) -> dict:
    """Build a memory of `size` exemplars, then time and score retrieval against exact search: cold
    (a freshly opened store, labels read as met), the read of every label (what the server does in
    the background when it starts), then steady state on new queries."""
    config = ctx.config
    space = ClusteredSpace.create(config.labels, DIM, rng)
    labels = exemplar_labels(size, config.labels)
    vectors = space.draw(labels, rng)
    first, queries = (space.draw(rng.integers(0, min(config.labels, size), config.queries), rng) for _ in range(2))
    folder, memory = ctx.work_dir / "retrieval", f"bench-{size}"
    log.info("retrieve: building a memory of %d exemplars over %d labels", size, min(config.labels, size))
    built = open_store(config, folder, dict(config.hnsw))
    build_s = build(built, memory, vectors, labels)
    built.close()
    store = open_store(config, folder)  # freshly opened: no label read yet
    try:
        return measured(ctx, store, memory, (vectors, labels, first, queries), build_s)
    finally:
        store.close()


def measured(ctx: BenchContext, store: MemoryStore, memory: str, data: tuple, build_s: float) -> dict:
    """Cold, label-read, mirror and steady timings, and recall against exact search, of a built memory."""
    config = ctx.config
    vectors, labels, first, queries = data
    retriever = Retriever(store)
    cold, _ = search_pass(retriever, memory, first, config.ks[0])
    read_s = timed(lambda: store.read_labels(memory))[0]
    mirror_s = timed(lambda: wait_for_mirror(store, memory))[0]
    steady, _ = search_pass(retriever, memory, queries, config.ks[0])
    exact_s, exact_indices = [], []
    for query in queries:
        seconds, top = timed(lambda query=query: exact_top_labels(vectors, labels, query, max(config.ks)))
        exact_s.append(seconds)
        exact_indices.append(top)
    exact = [[label_name(i) for i in top] for top in exact_indices]
    recall = {}
    for k in config.ks:
        found = search_pass(retriever, memory, queries, k)[1]
        recall[str(k)] = float(np.mean([label_recall(f, e, k) for f, e in zip(found, exact)]))
    reference = None
    if faiss_baseline.faiss_available():
        reference = faiss_baseline.measure(vectors, labels, queries, exact_indices, config.ks[0])
    return {
        "faiss": reference,
        "listing": measure_listing(store, memory),
        "exemplars": len(vectors),
        "labels": int(labels.max()) + 1,
        "queries": len(queries),
        "build_s": build_s,
        "cold": summarise(cold),
        "read_labels_s": read_s,
        "mirror_wait_s": mirror_s,
        "peak_rss_gb": peak_rss_gb(),
        "mirrored": store.mirrors.current(memory) is not None,
        "steady": summarise(steady),
        "exact": summarise(exact_s),
        "label_recall_at_k": recall,
    }


def peak_rss_gb() -> float:
    """The process's peak resident memory so far, in GiB (Linux and macOS; NaN elsewhere)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def wait_for_mirror(store: MemoryStore, memory: str, timeout_s: float = 7200.0) -> None:
    """Wait until the memory's in-process mirror (started by the first search) answers; returns at
    once when the store has none (faiss missing, or --no-in-process-index)."""
    deadline = time.monotonic() + timeout_s
    while store.mirrors.enabled and store.mirrors.current(memory) is None and time.monotonic() < deadline:
        time.sleep(0.5)


def measure_listing(store: MemoryStore, memory: str) -> dict:
    """Listing a memory as `list_memories` does (counts from the catalogue, the first page of labels),
    against what it cost before the catalogue: reading every entry's metadata once."""
    seconds = [
        timed(lambda: label_page(store.summary(memory).label_counts, DEFAULT_LIST_LABELS))[0]
        for _ in range(LIST_REPEATS)
    ]
    full_read_s = timed(lambda: sum(len(ids) for ids, _ in store.index.pages(store.index.get(memory))))[0]
    return {"list": summarise(seconds), "full_read_s": full_read_s}


def faiss_match(figures: dict) -> tuple[str, dict, float] | None:
    """The fastest faiss run at rar-tools' recall@k (k the first of --ks): its efSearch, its figures,
    and rar-tools' steady p50 over its p50."""
    if figures["faiss"] is None:
        return None
    recall = next(iter(figures["label_recall_at_k"].values()))
    ef, run = faiss_baseline.at_equal_recall(figures["faiss"], recall)
    return ef, run, figures["steady"]["p50_ms"] / run["p50_ms"]


def faiss_cells(figures: dict) -> list[str]:
    match = faiss_match(figures)
    if match is None:
        return ["-", "-", "-", "-"]
    ef, run, ratio = match
    return [ef, f"{run['p50_ms']:.2f}", f"{run['recall']:.3f}", f"{ratio:.1f}x"]


def run(ctx: BenchContext) -> SectionResult:
    config = ctx.config
    rng = np.random.default_rng(config.seed)
    by_size = {size: measure_size(ctx, size, rng) for size in config.sizes}
    ks = config.ks
    hnsw = {**HNSW_CONFIG, **dict(config.hnsw)}
    rows = [
        [
            f"{size:,}",
            f"{f['build_s']:.1f}",
            f"{f['cold']['p50_ms']:.2f}",
            f"{f['cold']['p95_ms']:.2f}",
            f"{f['read_labels_s']:.2f}",
            f"{f['mirror_wait_s']:.1f}" if f["mirrored"] else "off",
            f"{f['steady']['p50_ms']:.2f}",
            f"{f['steady']['p95_ms']:.2f}",
            f"{f['exact']['p50_ms']:.2f}",
            f"{f['exact']['p95_ms']:.2f}",
            *[f"{f['label_recall_at_k'][str(k)]:.4f}" for k in ks],
            *faiss_cells(f),
            f"{f['listing']['list']['p50_ms']:.1f}",
            f"{f['listing']['full_read_s']:.2f}",
        ]
        for size, f in by_size.items()
    ]
    columns = ["exemplars", "build s", "cold p50", "cold p95", "read labels s", "mirror wait s"]
    columns += ["p50", "p95", "exact p50", "exact p95"]
    table = Table(
        f"Retriever.retrieve k={ks[0]}, ms per query ({config.queries} queries, {config.labels} labels, "
        f"clustered {DIM}-d); label recall against exact search; HNSW {hnsw}",
        columns
        + [f"recall@{k}" for k in ks]
        + ["faiss efSearch", "faiss p50", "faiss recall", "p50 / faiss", "list ms", "full read s"],
        rows,
    )
    largest = max(by_size)
    note = "" if largest >= TARGET_SIZE else f"measured at {largest:,} exemplars, not {TARGET_SIZE:,}"
    p50 = by_size[largest]["steady"]["p50_ms"]
    targets = [Target(f"retrieve p50 at {largest:,}", p50, MAX_P50_MS, False, " ms", note)]
    if 5 in ks:
        worst = min(f["label_recall_at_k"]["5"] for f in by_size.values())
        targets.append(Target("label recall@5 (worst size)", worst, MIN_RECALL_AT_5, True))
    largest_figures = by_size[largest]
    listed = largest_figures["listing"]["list"]["p50_ms"]
    targets.append(Target(f"list a memory of {largest:,} p50", listed, MAX_LIST_MS, False, " ms", note))
    match = faiss_match(largest_figures)
    if match is not None:
        ratio = match[2]
        targets.append(Target(f"retrieve p50 / faiss at equal recall, {largest:,}", ratio, MAX_FAISS_RATIO, False, "x"))
    figures = {"sizes": {str(size): f for size, f in by_size.items()}, "hnsw": hnsw, "dim": DIM}
    return SectionResult("retrieve", [table], figures, targets)
