"""Where one retrieval's time goes: the Chroma path and the in-process mirror side by side.

    python examples/profile_retrieval.py /tmp/profile-100k --size 100000

Builds (once, in FOLDER) the retrieve benchmark's clustered memory, opens it twice in this process,
with and without the mirror, and times each part of a retrieval on the same queries, interleaved
(the order rotates every query), printing medians in ms. docs/portability.md#measured has a run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rar_tools.bench.data import ClusteredSpace, exemplar_labels
from rar_tools.bench.retrieve import DIM, IDENTITY, build
from rar_tools.memory import MemoryStore
from rar_tools.retrieval import Retriever

MEMORY = "profile"


def open_memory(folder: Path, size: int, queries: int) -> tuple[MemoryStore, MemoryStore, np.ndarray]:
    """The memory (built on the first run) opened without and with the mirror, and query vectors."""
    rng = np.random.default_rng(0)
    space = ClusteredSpace.create(1000, DIM, rng)
    labels = exemplar_labels(size, 1000)
    if not (folder / "built").exists():
        build(MemoryStore(folder, mirror=False), MEMORY, space.draw(labels, rng), labels)
        (folder / "built").write_text("built\n")
    chroma, mirrored = MemoryStore(folder, mirror=False), MemoryStore(folder)
    chroma.read_labels(MEMORY)
    return chroma, mirrored, space.draw(rng.integers(0, 1000, queries), rng)


def parts(chroma: MemoryStore, mirrored: MemoryStore, ids: list[str]) -> dict[str, Callable[[np.ndarray], object]]:
    collection = chroma.index.get(MEMORY)
    by_chroma, by_mirror = Retriever(chroma), Retriever(mirrored)
    return {
        "chroma: get_collection": lambda q: chroma.index.get(MEMORY, IDENTITY),
        "chroma: query n=64": lambda q: collection.query(query_embeddings=q[None], n_results=64, include=["distances"]),
        "chroma: query n=256": lambda q: collection.query(
            query_embeddings=q[None], n_results=256, include=["distances"]
        ),
        "chroma: store.kinds": lambda q: chroma.kinds(MEMORY),
        "chroma: store.nearest n=256": lambda q: chroma.nearest(MEMORY, IDENTITY, q, 256),
        "chroma: store.levels of 5 ids": lambda q: chroma.levels(MEMORY, ids),
        "mirror: store.kinds": lambda q: mirrored.kinds(MEMORY),
        "mirror: store.nearest n=256": lambda q: mirrored.nearest(MEMORY, IDENTITY, q, 256),
        "mirror: store.levels of 5 ids": lambda q: mirrored.levels(MEMORY, ids),
        "retrieve k=5, Chroma path": lambda q: by_chroma.retrieve(MEMORY, IDENTITY, q, 5, mode="image"),
        "retrieve k=5, mirror path": lambda q: by_mirror.retrieve(MEMORY, IDENTITY, q, 5, mode="image"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    chroma, mirrored, queries = open_memory(args.folder, args.size, args.queries)
    started = time.monotonic()
    while mirrored.mirrors.current(MEMORY) is None:  # the first call starts the mirror's build
        time.sleep(0.5)
    print(f"mirror ready after {time.monotonic() - started:.1f} s")
    timed = parts(chroma, mirrored, [hit.id for hit in chroma.nearest(MEMORY, IDENTITY, queries[0], 5)])
    names = list(timed)
    for query in queries[:10]:  # warm up: each Retriever learns the width its memory needs
        timed[names[-1]](query), timed[names[-2]](query)
    spent: dict[str, list[float]] = {name: [] for name in names}
    for index, query in enumerate(queries):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            timed[name](query)
            spent[name].append((time.perf_counter() - start) * 1000)
    for name in names:
        print(f"{name:34s} p50 {statistics.median(spent[name]):7.2f} ms")


if __name__ == "__main__":
    main()
