"""Figures from records, on hand-written records with known answers."""

from __future__ import annotations

import pytest

from rar_tools.evaluation.metrics import summarise
from rar_tools.evaluation.records import QueryRecord

RETRIEVED = ["b", "c", "d", "e", "f", "a"]  # the true label "a" is 6th


def record(method: str, retrieved: list[str], ranked=None, fallback=None, label: str = "a") -> QueryRecord:
    return QueryRecord(
        method=method,
        shots=1,
        query=str(id(retrieved)),
        label=label,
        retrieved=retrieved,
        ranked=ranked,
        fallback=fallback,
        timings={"encode_s": 0.5, "retrieve_s": 0.25, "rank_s": 1.0 if ranked else 0.0},
    )


def test_knn_top1_top5_and_recall() -> None:
    records = [record("clip-knn", ["a", "b", "c", "d", "e"]), record("clip-knn", ["b", "c", "a", "d", "e"])]
    (fig,) = summarise(records, k=2)
    assert (fig.top1, fig.top5, fig.recall_at_k, fig.queries) == (0.5, 1.0, 0.5, 2)


def test_rar_top1_is_the_ranked_first_and_top5_extends_with_retrieval_when_k_is_small() -> None:
    ranked_right = record("rar", ["b", "a", "c", "d", "e"], ranked=["a", "b"], fallback="none")
    from_retrieval = record("rar", ["b", "c", "d", "e", "a"], ranked=["c", "b"], fallback="full")
    (fig,) = summarise([ranked_right, from_retrieval], k=2)
    assert fig.top1 == 0.5 and fig.top5 == 1.0
    assert (fig.fallback_rate, fig.full_fallback_rate) == (0.5, 0.5)


def test_oracle_counts_the_true_label_among_k_and_has_no_top5() -> None:
    (fig,) = summarise([record("oracle@k", ["b", "a", "c"]), record("oracle@k", RETRIEVED)], k=2)
    assert fig.top1 == 0.5 and fig.top5 is None


def test_time_per_image_is_the_mean_per_stage_and_their_sum() -> None:
    (fig,) = summarise([record("rar", RETRIEVED, ranked=RETRIEVED[:5], fallback="none")], k=5)
    assert fig.seconds_per_image == pytest.approx({"encode_s": 0.5, "retrieve_s": 0.25, "rank_s": 1.0, "total_s": 1.75})


def test_groups_and_counts_of_computed_and_reused() -> None:
    records = [record("clip-knn", RETRIEVED), record("oracle@k", RETRIEVED), record("clip-knn", RETRIEVED)]
    figures = summarise(records, k=5, computed={("clip-knn", 1): 1})
    assert [(f.method, f.queries, f.computed, f.reused) for f in figures] == [
        ("clip-knn", 2, 1, 1),
        ("oracle@k", 1, 0, 1),
    ]
