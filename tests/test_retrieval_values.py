"""Retrieval, pinned values: entries at known cosine similarities to the query, so every score,
probability, support count, entry id and note can be written down in advance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rar_tools.errors import EncoderMismatchError
from rar_tools.identity import EncoderIdentity
from rar_tools.memory import MemoryStore, NewEntry
from rar_tools.memory.names import entry_id
from rar_tools.retrieval import Retriever, fuse_views, label_score, softmax

IDENTITY = EncoderIdentity(model="test", pretrained="none", dim=16)
QUERY = np.eye(16, dtype=np.float32)[0]
LOG2, LOG3, LOG4 = (math.log(n) / 100 for n in (2, 3, 4))  # similarity gaps giving odds 2:1, 3:1, 4:1


def at_similarity(similarity: float, axis: int) -> np.ndarray:
    """A unit vector whose cosine with QUERY is `similarity` (one free axis per entry)."""
    vector = similarity * np.eye(16)[0] + math.sqrt(1 - similarity**2) * np.eye(16)[axis]
    return vector.astype(np.float32)


def entries(kind: str, rows: list[tuple[str, float]]) -> list[NewEntry]:
    """Entries of `kind`, one per (label, similarity) row, each on its own axis."""
    offset = 1 if kind == "image" else 9
    return [
        NewEntry(label, kind, f"{kind}-{i}", at_similarity(s, offset + i))  # type: ignore[arg-type]
        for i, (label, s) in enumerate(rows)
    ]


def ids(kind: str, rows: list[int], labels: list[str]) -> list[str]:
    return [entry_id("m", kind, f"{kind}-{i}", label) for i, label in zip(rows, labels)]  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    return MemoryStore(tmp_path)


# -- one kind ---------------------------------------------------------------------------------------
def test_probabilities_are_a_softmax_of_one_hundred_times_the_scores(store: MemoryStore) -> None:
    store.add("m", IDENTITY, entries("image", [("a", 0.5), ("b", 0.5 - LOG2), ("c", 0.5 - LOG4)]))
    result = Retriever(store).retrieve("m", IDENTITY, QUERY, k=3, mode="image")
    assert [c.label for c in result.candidates] == ["a", "b", "c"]
    assert [c.probability for c in result.candidates] == pytest.approx([4 / 7, 2 / 7, 1 / 7], abs=1e-4)
    assert [c.image_similarity for c in result.candidates] == pytest.approx([0.5, 0.5 - LOG2, 0.5 - LOG4], abs=1e-5)
    assert [c.text_similarity for c in result.candidates] == [None, None, None]


def test_probabilities_are_over_the_k_returned_labels(store: MemoryStore) -> None:
    store.add("m", IDENTITY, entries("image", [("a", 0.5), ("b", 0.5 - LOG3), ("c", 0.1)]))
    result = Retriever(store).retrieve("m", IDENTITY, QUERY, k=2, mode="image")
    assert [(c.label, c.probability) for c in result.candidates] == [
        ("a", pytest.approx(0.75, abs=1e-4)),
        ("b", pytest.approx(0.25, abs=1e-4)),
    ]


def test_sum_of_top_three_adds_the_three_best_of_many_exemplars(store: MemoryStore) -> None:
    rows = [("many", s) for s in (0.1, 0.6, 0.2, 0.5, 0.4)] + [("one", 0.7)]
    store.add("m", IDENTITY, entries("image", rows))
    result = Retriever(store).retrieve("m", IDENTITY, QUERY, k=2, mode="image", how="sum-top3")
    assert [(c.label, c.support) for c in result.candidates] == [("many", 5), ("one", 1)]
    assert [c.score for c in result.candidates] == pytest.approx([0.6 + 0.5 + 0.4, 0.7], abs=1e-5)
    assert result.candidates[0].image_similarity == pytest.approx(0.6, abs=1e-5)  # the best, not the first added


def test_a_label_is_scored_by_its_best_similarity_or_its_top_three() -> None:
    similarities = [0.1, 0.6, 0.2, 0.5, 0.4]
    assert label_score(similarities, "max") == 0.6
    assert label_score(similarities, "sum-top3") == pytest.approx(1.5)
    assert label_score([0.3], "sum-top3") == pytest.approx(0.3)


def test_softmax_values() -> None:
    assert softmax([]) == []
    assert softmax([0.5, 0.5 - LOG3]) == pytest.approx([0.75, 0.25])
    assert softmax([1.0, 0.0], scale=math.log(3)) == pytest.approx([0.75, 0.25])
    assert softmax([1000.0, 999.0]) == pytest.approx([1.0, 0.0])  # no overflow


def test_entry_ids_and_support_list_every_exemplar_best_first(store: MemoryStore) -> None:
    store.add("m", IDENTITY, entries("image", [("a", 0.3), ("a", 0.5), ("b", 0.4)]))
    first, second = Retriever(store).retrieve("m", IDENTITY, QUERY, k=2, mode="image").candidates
    assert (first.label, first.support, first.entry_ids) == ("a", 2, ids("image", [1, 0], ["a", "a"]))
    assert (second.label, second.support, second.entry_ids) == ("b", 1, ids("image", [2], ["b"]))


# -- auto mode: image and text kinds fused -----------------------------------------------------------
@pytest.fixture
def mixed_store(store: MemoryStore) -> MemoryStore:
    """Images: 'seen' at 0.5 and 0.45, 'both' at 0.5 - ln3/100 (odds 3:1 against 'seen').
    Texts: 'both' at 0.4, 'named' at 0.4 - ln4/100 (odds 4:1)."""
    store.add("m", IDENTITY, entries("image", [("seen", 0.5), ("seen", 0.45), ("both", 0.5 - LOG3)]))
    store.add("m", IDENTITY, entries("text", [("both", 0.4), ("named", 0.4 - LOG4)]))
    return store


def test_auto_mode_averages_the_probabilities_of_each_kind(mixed_store: MemoryStore) -> None:
    result = Retriever(mixed_store).retrieve("m", IDENTITY, QUERY, k=3, mode="auto")
    # image kind: seen 0.75, both 0.25; text kind: both 0.8, named 0.2; averaged over the two kinds
    assert result.kinds == ["image", "text"]
    assert [c.label for c in result.candidates] == ["both", "seen", "named"]
    assert [c.score for c in result.candidates] == pytest.approx([0.525, 0.375, 0.1], abs=1e-4)
    assert [c.probability for c in result.candidates] == pytest.approx([0.525, 0.375, 0.1], abs=1e-4)


def test_auto_mode_renormalises_over_the_k_returned(mixed_store: MemoryStore) -> None:
    result = Retriever(mixed_store).retrieve("m", IDENTITY, QUERY, k=2, mode="auto")
    assert [c.probability for c in result.candidates] == pytest.approx([0.525 / 0.9, 0.375 / 0.9], abs=1e-4)


def test_auto_mode_joins_support_entry_ids_and_similarities_of_both_kinds(mixed_store: MemoryStore) -> None:
    both, seen, named = Retriever(mixed_store).retrieve("m", IDENTITY, QUERY, k=3, mode="auto").candidates
    assert (both.support, both.entry_ids) == (2, ids("image", [2], ["both"]) + ids("text", [0], ["both"]))
    assert (both.image_similarity, both.text_similarity) == (
        pytest.approx(0.5 - LOG3, abs=1e-5),
        pytest.approx(0.4, abs=1e-5),
    )
    assert (seen.support, seen.entry_ids, seen.text_similarity) == (2, ids("image", [0, 1], ["seen", "seen"]), None)
    assert seen.image_similarity == pytest.approx(0.5, abs=1e-5)
    assert (named.support, named.entry_ids, named.image_similarity) == (1, ids("text", [1], ["named"]), None)
    assert named.text_similarity == pytest.approx(0.4 - LOG4, abs=1e-5)


@pytest.mark.parametrize(("mode", "labels"), [("image", ["seen", "both"]), ("text", ["both", "named"])])
def test_a_single_mode_searches_only_its_kind(mixed_store: MemoryStore, mode: str, labels: list[str]) -> None:
    result = Retriever(mixed_store).retrieve("m", IDENTITY, QUERY, k=3, mode=mode)  # type: ignore[arg-type]
    assert (result.kinds, [c.label for c in result.candidates]) == ([mode], labels)


# -- notes and refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "note"),
    [
        ("image", "memory 'm' holds no image exemplars; add some with add_to_memory"),
        ("auto", "memory 'm' holds only 2 distinct label(s) for mode 'auto'; asked for k=3"),
        ("text", "memory 'm' holds only 2 distinct label(s) for mode 'text'; asked for k=3"),
    ],
)
def test_the_shortfall_note_says_what_is_missing(store: MemoryStore, mode: str, note: str) -> None:
    store.add("m", IDENTITY, entries("text", [("a", 0.5), ("b", 0.4)]))
    assert Retriever(store).retrieve("m", IDENTITY, QUERY, k=3, mode=mode).note == note  # type: ignore[arg-type]


def test_an_empty_memory_has_no_entries_to_search(store: MemoryStore) -> None:
    store.add("m", IDENTITY, entries("text", [("a", 0.5)]))
    store.remove("m", label="a")
    result = Retriever(store).retrieve("m", IDENTITY, QUERY, k=1)
    assert (result.candidates, result.note) == ([], "memory 'm' holds no entries; add some with add_to_memory")


def test_a_memory_filled_by_another_encoder_is_refused(store: MemoryStore) -> None:
    store.add("m", IDENTITY, entries("image", [("a", 0.5)]))
    other = EncoderIdentity(model="ViT-L-14", pretrained="openai", dim=16)
    with pytest.raises(EncoderMismatchError, match="memory 'm' was filled by CLIP test \\(none, 16-d\\)"):
        Retriever(store).retrieve("m", other, QUERY, k=1, mode="image")
    with pytest.raises(EncoderMismatchError, match="the loaded encoder is ViT-L-14 \\(openai, 16-d\\)"):
        Retriever(store).retrieve_fused("m", other, QUERY[None], [1.0], k=1, mode="image")


# -- several views ----------------------------------------------------------------------------------
def test_fused_views_are_the_unit_direction_of_the_weighted_sum_and_its_length() -> None:
    views = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    direction, length = fuse_views(views, [0.6, 0.8])
    assert direction == pytest.approx([0.6, 0.8]) and length == pytest.approx(1.0)
    direction, length = fuse_views(views, [0.3, 0.4])
    assert direction == pytest.approx([0.6, 0.8]) and length == pytest.approx(0.5)


def test_views_that_cancel_out_are_refused() -> None:
    with pytest.raises(ValueError, match="cancel out"):
        fuse_views(np.array([[1.0, 0.0], [-1.0, 0.0]]), [0.5, 0.5])


def test_one_weight_per_view_is_required(store: MemoryStore) -> None:
    store.add("m", IDENTITY, entries("image", [("a", 0.5)]))
    with pytest.raises(ValueError, match="one weight per view"):
        Retriever(store).retrieve_fused("m", IDENTITY, np.stack([QUERY, QUERY]), [1.0], k=1)


def test_fused_similarities_are_scaled_by_the_length_of_the_weighted_sum(store: MemoryStore) -> None:
    store.add("m", IDENTITY, entries("image", [("a", 0.5), ("b", 0.5 - LOG2)]))
    half = Retriever(store).retrieve_fused("m", IDENTITY, np.stack([QUERY, QUERY]), [0.25, 0.25], k=2)
    assert [c.image_similarity for c in half.candidates] == pytest.approx([0.25, 0.25 - LOG2 / 2], abs=1e-5)
    odds = math.sqrt(2)  # the halved gap gives odds e^(ln 2 / 2) = sqrt 2 : 1
    assert [c.probability for c in half.candidates] == pytest.approx([odds / (1 + odds), 1 / (1 + odds)], abs=1e-4)


def test_kinds_given_by_the_caller_are_the_kinds_searched(mixed_store: MemoryStore) -> None:
    result = Retriever(mixed_store).retrieve("m", IDENTITY, QUERY, k=3, mode="auto", kinds=["text"])
    assert (result.kinds, [c.label for c in result.candidates]) == (["text"], ["both", "named"])
