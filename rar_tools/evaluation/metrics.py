"""From query records to figures: accuracy, retrieval recall, fallback rate and time per image.

Each method's top-1 and top-5 are defined here, in one place, and `DEFINITIONS` says the same in
words for the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from statistics import fmean

from pydantic import BaseModel, Field

from rar_tools.evaluation.records import QueryRecord

TOP_N = 5
STAGES = ("encode_s", "retrieve_s", "rank_s")
DEFINITIONS = {
    "clip-zero-shot": "image-to-text retrieval over the class names ('a photo of a {name}.'); "
    "top-1 is the nearest name, top-5 the 5 nearest names",
    "clip-knn": "image-to-image retrieval over the n-shot memory, one score per label (its best exemplar); "
    "top-1 is the first retrieved label, top-5 the first 5 distinct retrieved labels",
    "rar": "the k labels retrieved from the n-shot image memory, ordered by the MLLM; top-1 is its first "
    "label, top-5 the first 5 of its order (for k < 5, followed by retrieved labels k+1..5)",
    "rar+adapter": "rar with the ranker's LoRA adapter (--ranker-adapter) on; rar is then the same ranker "
    "with the adapter switched off, on the same retrievals",
    "oracle@k": "whether the true label is among the k labels retrieved from the n-shot image memory: "
    "the best top-1 any ranker of those k could reach (equal to recall@k); top-5 is not defined",
    "recall@k": "share of queries whose true label is among the k distinct labels retrieved",
    "fallback_rate": "rar: share of ranked queries whose MLLM answer needed repair (partial or full fallback "
    "to the retrieval order; only generate mode, or an endpoint's score mode, can need it); "
    "full_fallback_rate: share whose answer was unusable",
    "time": "mean seconds per query image; one query encoding serves every method and shot count, and is "
    "counted in full for each",
}


class MethodFigures(BaseModel):
    """The figures of one method at one shot count (fractions in [0, 1], seconds per image)."""

    method: str
    shots: int = Field(description="images per class in the memory; 0 for zero-shot")
    queries: int
    top1: float
    top5: float | None
    recall_at_k: float
    fallback_rate: float | None = None
    full_fallback_rate: float | None = None
    seconds_per_image: dict[str, float] = Field(description="mean encode_s, retrieve_s, rank_s and total_s")
    computed: int = Field(0, description="queries computed in this run")
    reused: int = Field(0, description="queries taken from an earlier, interrupted run (--resume)")


def answer(record: QueryRecord) -> list[str]:
    """The method's labels, best first: the MLLM's order then the rest of the retrieval for rar,
    the retrieval order otherwise."""
    if record.ranked is None:
        return record.retrieved
    return record.ranked + [label for label in record.retrieved if label not in record.ranked]


def top1_hit(record: QueryRecord, k: int) -> bool:
    if record.method == "oracle@k":
        return record.label in record.retrieved[:k]
    return answer(record)[:1] == [record.label]


def top5_hit(record: QueryRecord) -> bool | None:
    if record.method == "oracle@k":
        return None
    return record.label in answer(record)[:TOP_N]


def share(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0


def figures(records: list[QueryRecord], k: int, computed: int = 0) -> MethodFigures:
    """The figures of one (method, shots) group of records."""
    first = records[0]
    top5 = [top5_hit(r) for r in records]
    ranked_generate = [r for r in records if r.fallback is not None]
    seconds = {stage: fmean(r.timings.get(stage, 0.0) for r in records) for stage in STAGES}
    seconds["total_s"] = sum(seconds.values())
    return MethodFigures(
        method=first.method,
        shots=first.shots,
        queries=len(records),
        top1=share(top1_hit(r, k) for r in records),
        top5=None if None in top5 else share(top5),
        recall_at_k=share(r.label in r.retrieved[:k] for r in records),
        fallback_rate=share(r.fallback != "none" for r in ranked_generate) if ranked_generate else None,
        full_fallback_rate=share(r.fallback == "full" for r in ranked_generate) if ranked_generate else None,
        seconds_per_image=seconds,
        computed=computed,
        reused=len(records) - computed,
    )


def summarise(
    records: Iterable[QueryRecord], k: int, computed: dict[tuple[str, int], int] | None = None
) -> list[MethodFigures]:
    """Figures per (method, shots), in the order the groups first appear in `records`."""
    groups: dict[tuple[str, int], list[QueryRecord]] = {}
    for record in records:
        groups.setdefault((record.method, record.shots), []).append(record)
    counts = computed or {}
    return [figures(group, k, counts.get(key, 0)) for key, group in groups.items()]
