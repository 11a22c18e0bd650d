"""Rank in several candidate orders and fuse the results, against the ranker's position bias.

List-ranking LLMs favour candidates by their place in the prompt. RAR shows the candidates in
retrieval order, so that bias adds to CLIP's own opinion. With `permutations = N > 1` a ranker ranks
N cyclic shifts of the candidate order, spread evenly (offsets 0, k/N, 2k/N, ... rounded down), each
as one ordinary ranking call:

* score mode: each candidate's probabilities are averaged over the N orders;
* generate mode: the N parsed rankings are fused by Borda count (a candidate in place r of k earns
  k - 1 - r points); a candidate's score is its share of all points.

Ties keep the input (retrieval) order. With N = k every candidate is shown once in every place, so
the fused result no longer depends on which of the k rotations of the list came in. Each order costs
one ranking call: in local score mode one prompt pass and one batched pass over the k candidates,
so N orders cost N prompt passes, not N x k. Exemplar images go with their candidates; the first
`MAX_EXEMPLAR_IMAGES` in each order are shown. Pure functions: no model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rar_tools.limits import Fallback
from rar_tools.ranking.base import RankedLabel, RankRequest, RankResult

RAW_TEXT_SEPARATOR = "\n--- next order ---\n"


def shift_offsets(k: int, n: int) -> list[int]:
    """The offsets of `n` evenly spread cyclic shifts of `k` items (at most k distinct ones)."""
    n = max(1, min(n, k))
    return [i * k // n for i in range(n)]


def shifted(request: RankRequest, offset: int) -> RankRequest:
    """`request` with its candidates (and their exemplars) rotated left by `offset`."""
    candidates = request.candidates[offset:] + request.candidates[:offset]
    exemplars = request.exemplars
    if exemplars is not None and len(exemplars) == len(request.candidates):
        exemplars = exemplars[offset:] + exemplars[:offset]
    return replace(request, candidates=candidates, exemplars=exemplars)


def rank_in_orders(rank_once: Callable[[RankRequest], RankResult], request: RankRequest, n: int) -> RankResult:
    """`rank_once(request)` when `n` is 1, else the fusion of its results over `n` cyclic shifts."""
    offsets = shift_offsets(len(request.candidates), n)
    if len(offsets) == 1:
        return rank_once(request)
    results = [rank_once(shifted(request, offset)) for offset in offsets]
    fuse = mean_probabilities if request.mode == "score" else borda
    fused = fuse(request.candidates, results)
    return RankResult(
        ranked=fused,
        mode=request.mode,
        fallback=fused_fallback([r.fallback for r in results]),
        raw_text=joined_texts([r.raw_text for r in results]),
        timings=summed_timings([r.timings for r in results]),
    )


def mean_probabilities(candidates: tuple[str, ...], results: list[RankResult]) -> list[RankedLabel]:
    """Each candidate's probability averaged over `results`, best first (ties in input order)."""
    totals = dict.fromkeys(candidates, 0.0)
    for result in results:
        for item in result.ranked:
            totals[item.label] += item.score
    return ordered({label: total / len(results) for label, total in totals.items()})


def borda(candidates: tuple[str, ...], results: list[RankResult]) -> list[RankedLabel]:
    """Borda fusion of rankings: k - 1 - place points per ranking; scores are shares of all points."""
    points = dict.fromkeys(candidates, 0.0)
    for result in results:
        for place, item in enumerate(result.ranked):
            points[item.label] += len(candidates) - 1 - place
    total = sum(points.values())
    shares = {label: p / total if total else 1.0 / len(points) for label, p in points.items()}
    return ordered(shares)


def ordered(scores: dict[str, float]) -> list[RankedLabel]:
    """Labels by descending score; `scores` is in input order, which breaks ties."""
    return [RankedLabel(label, score) for label, score in sorted(scores.items(), key=lambda kv: -kv[1])]


def fused_fallback(fallbacks: list[Fallback]) -> Fallback:
    """`none` when every order's answer was used whole, `full` when none was, else `partial`."""
    if all(f == "none" for f in fallbacks):
        return "none"
    return "full" if all(f == "full" for f in fallbacks) else "partial"


def joined_texts(texts: list[str | None]) -> str | None:
    """The raw answers of the orders, in order, or None when there were none (score mode)."""
    present = [t for t in texts if t is not None]
    return RAW_TEXT_SEPARATOR.join(present) if present else None


def summed_timings(timings: list[dict[str, float]]) -> dict[str, float]:
    """Each timing summed over the orders, and how many orders were ranked."""
    total: dict[str, float] = {}
    for timing in timings:
        for key, value in timing.items():
            total[key] = total.get(key, 0.0) + value
    total["orders"] = float(len(timings))
    return total
