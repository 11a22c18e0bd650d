"""Data set loaders: ImageFolder trees, the CUB layout and CSV files, as real files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image

from rar_tools.evaluation.datasets import DatasetError, load_dataset, prompt_name, prompt_names

CUB100 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cub100"


def write_cub(root: Path, separator: str) -> Path:
    """A 2-class CUB layout: 2 train + 1 test image per class, lines joined by `separator`."""
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images, labels, splits = [], [], []
    for c, name in enumerate(classes):
        for n in range(3):
            image_id = 3 * c + n + 1
            make_image(root / "images" / name / f"{n}.jpg", ("red", "blue")[c], seed=image_id)
            images.append(f"{image_id}{separator}{name}/{n}.jpg")
            labels.append(f"{image_id}{separator}{c + 1}")
            splits.append(f"{image_id}{separator}{1 if n < 2 else 0}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{c + 1}{separator}{n}" for c, n in enumerate(classes)) + "\n")
    return root


def test_folder_with_train_and_test_subfolders(labelled_folder: Path) -> None:
    dataset = load_dataset(labelled_folder)
    assert dataset.format == "folder"
    assert (len(dataset.train), len(dataset.test)) == (12, 9)
    assert dataset.labels == ["blue_thing", "green_thing", "red_thing"]
    assert all(Path(item.path).is_file() for item in dataset.train + dataset.test)


def test_one_tree_is_split_per_class_by_the_seeded_ratio(labelled_folder: Path) -> None:
    tree = labelled_folder / "train"
    first = load_dataset(tree, split_ratio=0.5, seed=3)
    again = load_dataset(tree, split_ratio=0.5, seed=3)
    other = load_dataset(tree, split_ratio=0.5, seed=4)
    assert first == again and first.train != other.train
    assert {i.label for i in first.train} == {i.label for i in first.test} == set(first.labels)
    assert not {i.id for i in first.train} & {i.id for i in first.test}


def test_one_tree_needs_a_split_ratio(labelled_folder: Path) -> None:
    with pytest.raises(DatasetError, match="--split-ratio"):
        load_dataset(labelled_folder / "train")


@pytest.mark.parametrize("separator", [", ", " "], ids=["comma", "space"])
def test_cub_layout_with_either_separator(tmp_path: Path, separator: str) -> None:
    dataset = load_dataset(write_cub(tmp_path / "cub", separator))
    assert dataset.format == "cub"
    assert (len(dataset.train), len(dataset.test)) == (4, 2)
    assert dataset.labels == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    assert Path(dataset.test[0].path).is_file()


def test_cub_layout_missing_a_file_is_named(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "cub", ", ")
    (root / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError, match="missing train_test_split.txt"):
        load_dataset(root, format="cub")


def test_csv_with_header_and_split_column(tmp_path: Path) -> None:
    for n, colour in enumerate(["red", "red", "blue", "blue"]):
        make_image(tmp_path / "img" / f"{n}.png", colour, seed=n)
    rows = ["path,label,split", "img/0.png,Red_Thing,train", "img/1.png,Red_Thing,test"]
    rows += ["img/2.png,Blue_Thing,train", "img/3.png,Blue_Thing,test"]
    (tmp_path / "set.csv").write_text("\n".join(rows) + "\n")
    dataset = load_dataset(tmp_path / "set.csv")
    assert dataset.format == "csv" and dataset.name == tmp_path.name  # the data set's folder, not the CSV's name
    assert [i.id for i in dataset.train] == ["img/0.png", "img/2.png"]
    assert dataset.test[0].path == str((tmp_path / "img" / "1.png").resolve())


def test_csv_without_split_column_uses_the_ratio(tmp_path: Path) -> None:
    for n in range(4):
        make_image(tmp_path / f"{n}.png", "green", seed=n)
    (tmp_path / "set.csv").write_text("".join(f"{n}.png,green\n" for n in range(4)))
    dataset = load_dataset(tmp_path / "set.csv", split_ratio=0.75)
    assert (len(dataset.train), len(dataset.test)) == (3, 1)


def test_csv_rejects_an_unknown_split(tmp_path: Path) -> None:
    (tmp_path / "set.csv").write_text("a.png,x,train\nb.png,x,holdout\n")
    with pytest.raises(DatasetError, match="row 2 has split 'holdout'"):
        load_dataset(tmp_path / "set.csv")


def test_empty_test_split_is_refused(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png", "red", seed=0)
    (tmp_path / "set.csv").write_text("a.png,x,train\n")
    with pytest.raises(DatasetError, match="both splits need images"):
        load_dataset(tmp_path / "set.csv")


def test_class_names_are_cleaned_for_prompts_only() -> None:
    assert prompt_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert prompt_name("sports_car") == "sports car"
    assert prompt_names(["b_c", "a"]) == {"b c": "b_c", "a": "a"}


def test_labels_that_clean_to_one_name_are_refused() -> None:
    with pytest.raises(DatasetError, match="both read 'blue jay'"):
        prompt_names(["blue_jay", "blue jay"])


@pytest.mark.skipif(not CUB100.is_dir(), reason="../shared/data/cub100 is absent (a user's own clone)")
def test_shared_cub100_subset_loads() -> None:
    dataset = load_dataset(CUB100)
    assert len(dataset.labels) == 100
    assert len(dataset.train) + len(dataset.test) == 5902
    assert Path(dataset.train[0].path).is_file()
