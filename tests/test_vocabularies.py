"""The shipped label lists: sizes, format, distinct valid labels, and their hierarchies."""

from __future__ import annotations

import pytest

from rar_tools.api import check_label
from rar_tools.label_lists import read_label_file, vocabularies

SIZES = {"lvis_v1": 1203, "cub_200": 200, "fgvc_aircraft": 100, "oxford_flowers_102": 102, "oxford_pets": 37}


def test_every_expected_vocabulary_is_shipped() -> None:
    assert set(SIZES) <= set(vocabularies())


@pytest.mark.parametrize("name, size", sorted(SIZES.items()))
def test_vocabulary_has_its_dataset_size_of_distinct_valid_labels(name: str, size: int) -> None:
    rows = read_label_file(vocabularies()[name])
    labels = [label for label, _, _ in rows]
    assert len(labels) == size == len(set(labels))
    assert all(check_label(label) == label for label in labels)


@pytest.mark.parametrize(
    "name, categories, parents",
    [("cub_200", 37, 13), ("fgvc_aircraft", 70, 30), ("oxford_pets", 2, 1)],
)
def test_hierarchies_have_the_known_number_of_groups(name: str, categories: int, parents: int) -> None:
    rows = read_label_file(vocabularies()[name])
    assert len({c for _, c, _ in rows if c}) == categories
    assert len({p for _, _, p in rows if p}) == parents


def test_a_category_always_sits_under_one_parent() -> None:
    for name in ("cub_200", "fgvc_aircraft", "oxford_pets"):
        parents: dict[str, set[str]] = {}
        for _, category, parent in read_label_file(vocabularies()[name]):
            if category:
                parents.setdefault(category, set()).add(parent)
        assert all(len(p) == 1 for p in parents.values()), name


def test_lists_without_a_known_hierarchy_carry_none() -> None:
    for name in ("lvis_v1", "oxford_flowers_102"):
        assert all(c is None and p is None for _, c, p in read_label_file(vocabularies()[name]))
