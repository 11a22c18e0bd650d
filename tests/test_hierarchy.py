"""Category and parent probabilities are sums of the fine labels' probabilities."""

from __future__ import annotations

import pytest

from rar_tools.hierarchy import FineLabel, finest_confident, group_probabilities

GULLS_AND_TERNS = [
    FineLabel("Herring Gull", 0.30, "gull", "Laridae"),
    FineLabel("Western Gull", 0.25, "gull", "Laridae"),
    FineLabel("Common Tern", 0.20, "tern", "Laridae"),
    FineLabel("Blue Jay", 0.15, "jay", "Corvidae"),
    FineLabel("Mystery bird", 0.10),
]


def test_category_probability_is_the_sum_over_its_labels() -> None:
    groups = {g.name: g for g in group_probabilities(GULLS_AND_TERNS, "category")}
    assert groups["gull"].probability == pytest.approx(0.55)
    assert groups["gull"].labels == ("Herring Gull", "Western Gull")
    assert groups["tern"].probability == pytest.approx(0.20)


def test_levels_and_labels_without_them_account_for_all_probability() -> None:
    unplaced = sum(f.probability for f in GULLS_AND_TERNS if f.category is None)
    for level in ("category", "parent"):
        assert sum(g.probability for g in group_probabilities(GULLS_AND_TERNS, level)) + unplaced == pytest.approx(1.0)


def test_groups_come_most_probable_first() -> None:
    parents = group_probabilities(GULLS_AND_TERNS, "parent")
    assert [g.name for g in parents] == ["Laridae", "Corvidae"]
    assert parents[0].probability == pytest.approx(0.75)


def test_label_level_is_the_labels_themselves() -> None:
    labels = group_probabilities(GULLS_AND_TERNS, "label")
    assert [g.name for g in labels][:2] == ["Herring Gull", "Western Gull"] and len(labels) == 5


@pytest.mark.parametrize(
    "min_confidence, level, name",
    [
        (0.0, "label", "Herring Gull"),
        (0.3, "label", "Herring Gull"),
        (0.5, "category", "gull"),
        (0.7, "parent", "Laridae"),
    ],
)
def test_finest_level_above_the_confidence_is_chosen(min_confidence: float, level: str, name: str) -> None:
    answer = finest_confident(GULLS_AND_TERNS, min_confidence)
    assert (answer.level, answer.name) == (level, name)


def test_no_level_sure_enough_gives_no_answer() -> None:
    assert finest_confident(GULLS_AND_TERNS, 0.8) is None
    assert finest_confident([], 0.0) is None
