"""Retrieval returns k distinct labels, best first, and is honest when the memory holds fewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rar_tools import retrieval
from rar_tools.api import RarTools
from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import EncoderMismatchError, MemoryStoreError
from rar_tools.memory import MemoryStore, NewEntry
from rar_tools.retrieval import Retriever, region_mode

IDENTITY = EncoderIdentity(model="test", pretrained="none", dim=8)


# Every test here that touches a store runs on the embedded store and on a real Chroma server.
MEMORY_BACKENDS = ["embedded", "chroma-server"]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def image_entries(label: str, centre: np.ndarray, n: int, rng: np.random.Generator) -> list[NewEntry]:
    return [
        NewEntry(
            label=label,
            kind="image",
            sha256=f"{label}-{i}",
            embedding=unit(centre + 0.05 * rng.normal(size=centre.size)),
        )
        for i in range(n)
    ]


@pytest.fixture
def crowded_store(tmp_path: Path, make_store) -> tuple[MemoryStore, np.ndarray]:
    """100 exemplars of one label right at the query, and one exemplar of each of 9 others."""
    rng = np.random.default_rng(0)
    query = unit(np.eye(8)[0])
    store = make_store(tmp_path)
    entries = image_entries("crowd", query, 100, rng)
    for i in range(9):
        entries += image_entries(f"other {i}", unit(query + (0.5 + 0.1 * i) * np.eye(8)[1 + i % 7]), 1, rng)
    store.add("m", IDENTITY, entries)
    return store, query


def test_k_distinct_labels_even_when_one_label_floods_the_neighbours(crowded_store) -> None:
    store, query = crowded_store
    result = Retriever(store).retrieve("m", IDENTITY, query, k=5, mode="image")
    labels = [c.label for c in result.candidates]
    assert len(labels) == 5 == len(set(labels))
    assert labels[0] == "crowd"
    assert result.candidates[0].support > 5  # many exemplars support the first label
    assert result.note is None


def test_labels_past_the_widest_neighbour_list_are_found_with_filters(
    crowded_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, query = crowded_store
    monkeypatch.setattr(retrieval, "WIDEST", 64)  # the 100 "crowd" exemplars fill every unfiltered list
    labels = [c.label for c in Retriever(store).retrieve("m", IDENTITY, query, k=5, mode="image").candidates]
    assert len(set(labels)) == 5 and labels[0] == "crowd"


def test_filtered_searches_go_on_while_a_full_list_brings_no_new_label(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieval, "WIDEST", 64)
    rng, query = np.random.default_rng(2), unit(np.eye(8)[0])
    store = MemoryStore(tmp_path)
    store.add(
        "m",
        IDENTITY,
        image_entries("a", query, 100, rng)  # cosine about 0.99: fills the unfiltered list
        + image_entries("b", unit(query + 0.75 * np.eye(8)[1]), 100, rng)  # 0.8: fills the first filtered one
        + image_entries("c", unit(query + 1.7 * np.eye(8)[2]), 70, rng),  # 0.5: fills the second one
    )
    spy = WidthSpy(store)
    labels = [c.label for c in Retriever(spy).retrieve("m", IDENTITY, query, k=3, mode="image").candidates]
    assert labels == ["a", "b", "c"]
    assert spy.excluded == [["a"], ["a", "b"]]  # none once the third label is found, though its list was full


def test_candidates_carry_the_category_and_parent_of_their_best_entry(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    query = unit(np.eye(8)[0])
    store.add("m", IDENTITY, [NewEntry("gull", "text", "t", query, category="larus", parent="seabird")])
    (candidate,) = Retriever(store).retrieve("m", IDENTITY, query, k=1, mode="text").candidates
    assert (candidate.category, candidate.parent) == ("larus", "seabird")


def test_the_width_a_crowded_memory_needed_is_where_later_searches_start(crowded_store) -> None:
    store, query = crowded_store
    retriever = Retriever(store)
    first = retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    assert retriever.widths[("m", 5, store.generation("m"))] == 256  # 100 "crowd" exemplars fill the first 64
    assert retriever.width("m", 5) == 256
    again = retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    assert [c.label for c in again.candidates] == [c.label for c in first.candidates]
    store.remove("m", label="other 0")
    assert retriever.width("m", 5) == retrieval.FIRST_WIDTH


class WidthSpy:
    """A store whose `nearest` records the neighbour-list width each search asked for, and whose
    `nearest_excluding` records the labels each filtered search left out."""

    def __init__(self, store: MemoryStore) -> None:
        self.store, self.asked, self.excluded = store, [], []

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list:
        self.asked.append(n)
        return self.store.nearest(name, identity, embedding, n)

    def nearest_excluding(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, kind, n, exclude_labels):
        self.excluded.append(list(exclude_labels))
        return self.store.nearest_excluding(name, identity, embedding, kind, n, exclude_labels)


def test_retrieval_after_a_removal_starts_from_a_narrow_width_again(crowded_store) -> None:
    store, query = crowded_store
    spy = WidthSpy(store)
    retriever = Retriever(spy)
    retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    assert spy.asked == [64, 256]  # 100 "crowd" exemplars fill the first list
    spy.asked.clear()
    retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    assert spy.asked == [256]  # starts where the memory needed
    store.remove("m", label="other 8")
    spy.asked.clear()
    retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    assert spy.asked == [64, 256]  # the width learned before the removal is forgotten


def one_label_texts(count: int) -> list[NewEntry]:
    """`count` label texts of one label near the query direction e0."""
    return [NewEntry("crowd", "text", f"t{i}", unit(np.eye(8)[0] + 0.1 * np.eye(8)[1 + i % 7])) for i in range(count)]


def test_a_full_neighbour_list_may_hide_more_labels_so_the_search_widens(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    store.add("m", IDENTITY, one_label_texts(64))
    spy = WidthSpy(store)
    retriever = Retriever(spy)
    assert [c.label for c in retriever.retrieve("m", IDENTITY, unit(np.eye(8)[0]), k=2).candidates] == ["crowd"]
    assert spy.asked == [64, 256]  # 64 of 64 came back: there could have been more
    assert retriever.widths == {("m", 2, store.generation("m")): 256}


def test_a_search_the_first_width_answers_teaches_nothing(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    store.add("m", IDENTITY, one_label_texts(3) + [NewEntry("other", "text", "o", unit(np.ones(8)))])
    retriever = Retriever(store)
    retriever.retrieve("m", IDENTITY, unit(np.eye(8)[0]), k=2)
    assert retriever.widths == {}


def test_widths_of_an_older_generation_are_dropped(crowded_store) -> None:
    store, query = crowded_store
    retriever = Retriever(store)
    retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    before = store.generation("m")
    store.remove("m", label="other 8")
    retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    assert retriever.widths == {("m", 5, store.generation("m")): 256} and store.generation("m") != before


def test_a_search_for_many_labels_starts_at_four_neighbours_per_label(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    store.add("m", IDENTITY, [NewEntry(f"l{i}", "text", f"t{i}", unit(np.eye(8)[i % 8] + 0.01 * i)) for i in range(30)])
    spy = WidthSpy(store)
    retriever = Retriever(spy)
    assert len(retriever.retrieve("m", IDENTITY, unit(np.eye(8)[0]), k=20).candidates) == 20
    assert spy.asked == [80] and retriever.widths == {}  # 4 x 20; the first width needs no remembering


def test_a_full_list_holding_exactly_k_labels_is_enough(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    near = [NewEntry("a", "text", f"a{i}", unit(np.eye(8)[0] + 0.01 * np.eye(8)[1 + i % 7])) for i in range(35)]
    far = [NewEntry("b", "text", f"b{i}", unit(np.eye(8)[0] + 0.5 * np.eye(8)[1 + i % 7])) for i in range(35)]
    store.add("m", IDENTITY, near + far)
    spy = WidthSpy(store)
    assert [c.label for c in Retriever(spy).retrieve("m", IDENTITY, unit(np.eye(8)[0]), k=2).candidates] == ["a", "b"]
    assert spy.asked == [64]


def test_a_width_learned_for_one_memory_survives_another_memorys_search(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    for name in ("m", "n"):
        store.add(name, IDENTITY, one_label_texts(64) + [NewEntry("gone", "text", "g", unit(np.ones(8)))])
    store.remove("m", label="gone")  # m's generation moves on, n's does not
    retriever, query = Retriever(store), unit(np.eye(8)[0])
    retriever.retrieve("m", IDENTITY, query, k=2)
    retriever.retrieve("n", IDENTITY, query, k=3)
    assert set(retriever.widths) == {("m", 2, store.generation("m")), ("n", 3, store.generation("n"))}


def test_a_dropped_memory_made_again_starts_narrow(crowded_store) -> None:
    store, query = crowded_store
    retriever = Retriever(store)
    retriever.retrieve("m", IDENTITY, query, k=5, mode="image")
    store.drop("m")
    store.add("m", IDENTITY, [NewEntry(f"label {i}", "text", f"t{i}", unit(np.eye(8)[i])) for i in range(8)])
    assert retriever.width("m", 5) == retrieval.FIRST_WIDTH
    assert len(retriever.retrieve("m", IDENTITY, query, k=5, mode="text").candidates) == 5


def test_candidates_are_ordered_by_score(crowded_store) -> None:
    store, query = crowded_store
    scores = [c.score for c in Retriever(store).retrieve("m", IDENTITY, query, k=8, mode="image").candidates]
    assert scores == sorted(scores, reverse=True)


def test_probabilities_over_returned_candidates_sum_to_one(crowded_store) -> None:
    store, query = crowded_store
    result = Retriever(store).retrieve("m", IDENTITY, query, k=4, mode="image")
    assert sum(c.probability for c in result.candidates) == pytest.approx(1.0)


def test_fewer_labels_than_k_gives_all_of_them_and_a_note(crowded_store) -> None:
    store, query = crowded_store
    result = Retriever(store).retrieve("m", IDENTITY, query, k=20, mode="image")
    assert len(result.candidates) == 10
    assert "holds only 10 distinct label(s)" in result.note


def test_mode_without_matching_entries_returns_nothing_and_says_why(crowded_store) -> None:
    store, query = crowded_store
    result = Retriever(store).retrieve("m", IDENTITY, query, k=3, mode="text")
    assert result.candidates == [] and "holds no label texts" in result.note


def test_sum_of_top_three_rewards_well_supported_labels(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    query = unit(np.eye(8)[0])
    near_single = unit(query + 0.3 * np.eye(8)[1])
    store.add(
        "m",
        IDENTITY,
        [NewEntry("single", "image", "s", near_single)]
        + image_entries("triple", unit(query + 0.45 * np.eye(8)[2]), 3, np.random.default_rng(1)),
    )
    best = Retriever(store).retrieve("m", IDENTITY, query, k=2, mode="image", how="max").candidates
    summed = Retriever(store).retrieve("m", IDENTITY, query, k=2, mode="image", how="sum-top3").candidates
    assert best[0].label == "single" and summed[0].label == "triple"


def test_auto_mode_fuses_images_and_texts(tmp_path: Path, make_store) -> None:
    store = make_store(tmp_path)
    query = unit(np.eye(8)[0])
    store.add(
        "m",
        IDENTITY,
        image_entries("seen", query, 2, np.random.default_rng(0))
        + [NewEntry("named", "text", "t", unit(query + 0.2 * np.eye(8)[3]))],
    )
    result = Retriever(store).retrieve("m", IDENTITY, query, k=5, mode="auto")
    assert result.kinds == ["image", "text"]
    by_label = {c.label: c for c in result.candidates}
    assert by_label["seen"].image_similarity is not None and by_label["seen"].text_similarity is None
    assert by_label["named"].text_similarity is not None
    assert sum(c.probability for c in result.candidates) == pytest.approx(1.0)


def test_retrieve_an_image_end_to_end(tools: RarTools, image_folder: Path) -> None:
    for colour in ("red", "green", "blue"):
        tools.add_images("colours", [str(p) for p in sorted((image_folder / colour).iterdir())[:2]], colour)
    result = tools.retrieve("colours", str(image_folder / "red" / "2.png"), k=3)
    assert sorted(c.label for c in result.candidates) == ["blue", "green", "red"]
    assert result.kinds_searched == ["image"] and set(result.timings) == {"load_s", "encode_s", "search_s"}
    assert all(len(c.entry_ids) == c.support == 2 for c in result.candidates)


def test_query_of_a_stored_image_finds_it_first(tools: RarTools, image_folder: Path) -> None:
    images = {c: str(image_folder / c / "0.png") for c in ("red", "green", "blue", "yellow")}
    for colour, path in images.items():
        tools.add_images("colours", [path], colour)
    result = tools.retrieve("colours", images["blue"], k=2, mode="image")
    assert result.candidates[0].label == "blue"
    assert result.candidates[0].image_similarity == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("k", [0, 51])
def test_k_out_of_range_is_refused(tools: RarTools, image_folder: Path, k: int) -> None:
    tools.add_labels("zs", ["a"])
    with pytest.raises(MemoryStoreError, match="k must be an integer from 1 to 50"):
        tools.retrieve("zs", str(image_folder / "red" / "0.png"), k=k)


def test_retrieval_from_an_embedding_matches_retrieval_from_the_image(tools: RarTools, image_folder: Path) -> None:
    for colour in ("red", "green", "blue"):
        tools.add_images("colours", [str(image_folder / colour / "0.png")], colour)
    query = str(image_folder / "green" / "1.png")
    embedding = tools.encoder.encode_images([tools.load(query).image])[0]
    from_embedding = tools.retrieve_embedding("colours", embedding, k=3, mode="image")
    from_image = tools.retrieve("colours", query, k=3, mode="image")
    # the first search may be Chroma's and the next the in-process mirror's: float32 sums may differ in the last bit
    assert [(c.label, c.entry_ids) for c in from_embedding.candidates] == [
        (c.label, c.entry_ids) for c in from_image.candidates
    ]
    assert [c.score for c in from_embedding.candidates] == pytest.approx([c.score for c in from_image.candidates])
    assert set(from_embedding.timings) == {"search_s"}


def test_precomputed_entries_are_stored_and_retrieved(tools: RarTools, image_folder: Path) -> None:
    loaded = [tools.load(str(image_folder / colour / "0.png")) for colour in ("red", "blue")]
    embeddings = tools.encoder.encode_images([item.image for item in loaded])
    entries = [
        NewEntry(label=label, kind="image", sha256=item.sha256, embedding=vector)
        for label, item, vector in zip(("red", "blue"), loaded, embeddings)
    ]
    result = tools.add_entries("pre", entries)
    assert (result.added, result.count, result.kind) == (2, 2, "image")
    assert tools.retrieve_embedding("pre", embeddings[1], k=1).candidates[0].label == "blue"


def test_entries_of_mixed_kinds_are_refused(tools: RarTools) -> None:
    vector = unit(np.ones(tools.encoder.dim))
    entries = [NewEntry("a", "image", "x", vector), NewEntry("a", "text", "y", vector)]
    with pytest.raises(MemoryStoreError, match="all of one kind"):
        tools.add_entries("pre", entries)


# -- several views of one query ------------------------------------------------------------------
@pytest.fixture
def text_store(tmp_path: Path) -> MemoryStore:
    """Eight label texts at random directions."""
    rng = np.random.default_rng(5)
    store = MemoryStore(tmp_path)
    store.add("m", IDENTITY, [NewEntry(f"label {i}", "text", f"t{i}", unit(rng.normal(size=8))) for i in range(8)])
    return store


def test_fused_views_score_labels_by_the_weighted_sum_of_similarities(text_store: MemoryStore) -> None:
    rng = np.random.default_rng(6)
    views = np.stack([unit(rng.normal(size=8)) for _ in range(3)])
    weights = [0.5, 0.3, 0.2]
    result = Retriever(text_store).retrieve_fused("m", IDENTITY, views, weights, k=8, mode="text")
    texts = text_store.index.get("m").get(include=["embeddings", "metadatas"])
    expected = {m["label"]: float(np.dot(weights, views @ e)) for e, m in zip(texts["embeddings"], texts["metadatas"])}
    assert [c.label for c in result.candidates] == sorted(expected, key=expected.get, reverse=True)
    for candidate in result.candidates:
        assert candidate.score == pytest.approx(expected[candidate.label], abs=1e-5)


def test_one_view_is_plain_retrieval(text_store: MemoryStore) -> None:
    query = unit(np.arange(8.0))
    fused = Retriever(text_store).retrieve_fused("m", IDENTITY, query[None], [1.0], k=4, mode="text")
    plain = Retriever(text_store).retrieve("m", IDENTITY, query, k=4, mode="text")
    # one search may be Chroma's and the other the in-process mirror's: float32 sums differ in the last bits
    assert [c.label for c in fused.candidates] == [c.label for c in plain.candidates]
    assert [c.score for c in fused.candidates] == pytest.approx([c.score for c in plain.candidates], abs=1e-5)


def test_regions_search_label_texts_in_auto_mode_when_there_are_any(crowded_store, tmp_path: Path) -> None:
    store, _ = crowded_store
    assert region_mode(store, "m", "auto") == "image"  # only exemplar images: they are all there is
    store.add("m", IDENTITY, [NewEntry("named", "text", "t", unit(np.ones(8)))])
    assert region_mode(store, "m", "auto") == "text"
    assert region_mode(store, "m", "image") == "image"


def test_restricting_candidates_renormalises_their_probabilities(crowded_store) -> None:
    store, query = crowded_store
    result = Retriever(store).retrieve("m", IDENTITY, query, k=5, mode="image")
    kept = result.restricted([3, 1])
    assert [c.label for c in kept.candidates] == [result.candidates[1].label, result.candidates[3].label]
    assert sum(c.probability for c in kept.candidates) == pytest.approx(1.0)
    assert kept.candidates[0].probability / kept.candidates[1].probability == pytest.approx(
        result.candidates[1].probability / result.candidates[3].probability
    )


class ReplacedMidSearch(WidthSpy):
    """A store whose memory is dropped and filled again by another encoder right after the first
    (unfiltered) search: another session replacing it meanwhile."""

    def nearest(self, name: str, identity: EncoderIdentity, embedding: np.ndarray, n: int) -> list:
        hits = super().nearest(name, identity, embedding, n)
        self.store.drop(name)
        other = EncoderIdentity(model="ViT-L-14", pretrained="openai", dim=identity.dim)
        self.store.add(name, other, [NewEntry("gull", "image", "gull", embedding)])
        return hits


def test_a_memory_replaced_by_another_encoder_mid_search_is_refused(
    crowded_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, query = crowded_store
    monkeypatch.setattr(retrieval, "WIDEST", 64)  # the filtered searches that follow check the encoder again
    with pytest.raises(EncoderMismatchError, match="memory 'm' was filled by CLIP ViT-L-14"):
        Retriever(ReplacedMidSearch(store)).retrieve("m", IDENTITY, query, k=5, mode="image")


def test_a_narrower_width_learned_later_keeps_the_wider_one(crowded_store) -> None:
    store, _ = crowded_store
    retriever = Retriever(store)  # two searches of one generation finishing in the other order
    generation = store.generation("m")
    retriever._learn_width("m", 5, generation, 1024)
    retriever._learn_width("m", 5, generation, 256)
    assert retriever.width("m", 5) == 1024


def test_an_entry_gone_before_its_levels_are_read_has_none(crowded_store) -> None:
    store, _ = crowded_store
    candidate = retrieval.LabelCandidate(label="crowd", score=1.0, entry_ids=["removed meanwhile"])
    retrieval.add_levels(store, "m", [candidate])
    assert (candidate.category, candidate.parent) == (None, None)
