"""Labelled image sets for evaluation: an ImageFolder tree, the CUB layout, or a CSV of paths.

Every loader returns a `Dataset`: train and test items, each an image path with its label exactly
as the data set writes it. `prompt_name` gives the cleaned name that CLIP prompts and the MLLM see.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rar_tools.errors import RarToolsError
from rar_tools.evaluation.sampling import by_label, seeded_shuffle
from rar_tools.images import IMAGE_SUFFIXES
from rar_tools.validation import check_label

DatasetFormat = Literal["auto", "folder", "cub", "csv"]
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
TRAIN_DIRS = ("train",)
TEST_DIRS = ("test", "val")
CLASS_NUMBER = re.compile(r"^\d+\.(?=\S)")  # CUB's "001.Black_footed_Albatross"
CSV_HEADER = ("path", "label")


class DatasetError(RarToolsError):
    """A data set could not be read, or its layout is not one the harness supports."""


@dataclass(frozen=True)
class LabelledImage:
    """One image of a data set: a stable id, its absolute path and its label as given."""

    id: str
    path: str
    label: str


@dataclass(frozen=True)
class Dataset:
    """A labelled image set split into train (memory) and test (queries)."""

    name: str
    root: str
    format: str
    train: tuple[LabelledImage, ...]
    test: tuple[LabelledImage, ...]

    @property
    def labels(self) -> list[str]:
        """Every label of either split, sorted, as given."""
        return sorted({item.label for item in self.train + self.test})

    def fingerprint(self) -> str:
        """A hash of every (split, id, path, label): two runs on the same items share it."""
        digest = hashlib.sha256()
        for split, items in (("train", self.train), ("test", self.test)):
            for item in items:
                digest.update("\x00".join((split, item.id, item.path, item.label)).encode() + b"\n")
        return digest.hexdigest()[:16]


def prompt_name(label: str) -> str:
    """The label as prompts show it: a leading class number dropped, underscores to spaces."""
    return check_label(CLASS_NUMBER.sub("", label).replace("_", " "), "class name", DatasetError)


def prompt_names(labels: list[str]) -> dict[str, str]:
    """{prompt name: label as given} for all labels; refuses two labels that clean to one name."""
    names: dict[str, str] = {}
    for label in labels:
        name = prompt_name(label)
        if name in names:
            raise DatasetError(f"labels {names[name]!r} and {label!r} both read {name!r} in prompts; rename one")
        names[name] = label
    return names


# -- ImageFolder -------------------------------------------------------------------------------
def folder_items(root: Path, prefix: str = "") -> list[LabelledImage]:
    """`root/<label>/<image>` as items whose id is the path relative to `root`'s parent tree."""
    items = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            items.append(LabelledImage(f"{prefix}{class_dir.name}/{path.name}", str(path.resolve()), class_dir.name))
    return items


def split_by_ratio(items: list[LabelledImage], train_fraction: float, seed: int) -> tuple[list, list]:
    """Per label, a seeded shuffle; the first `train_fraction` (at least one image) goes to train."""
    if not 0 < train_fraction < 1:
        raise DatasetError(f"the split ratio is the train fraction, strictly between 0 and 1; got {train_fraction}")
    train, test = [], []
    for label, group in by_label(items).items():
        shuffled = seeded_shuffle(group, seed, f"split:{label}")
        cut = max(1, round(train_fraction * len(shuffled)))
        train += shuffled[:cut]
        test += shuffled[cut:]
    return train, test


def load_folder(root: Path, split_ratio: float | None = None, seed: int = 0) -> Dataset:
    """`root/train/<label>/*` + `root/test/<label>/*` (or `val/`), or one `root/<label>/*` tree
    split per label by `split_ratio` (the train fraction)."""
    train_dir = next((root / d for d in TRAIN_DIRS if (root / d).is_dir()), None)
    test_dir = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
    if train_dir and test_dir:
        if split_ratio is not None:
            raise DatasetError(f"{root} already has {train_dir.name}/ and {test_dir.name}/; drop --split-ratio")
        train, test = folder_items(train_dir, "train/"), folder_items(test_dir, f"{test_dir.name}/")
    else:
        items = folder_items(root)
        if not items and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
            raise DatasetError(flat_folder_message(root))
        if split_ratio is None:
            raise DatasetError(
                f"{root} has no train/ and test/ folders: give --split-ratio R to split its <label>/ folders"
            )
        train, test = split_by_ratio(items, split_ratio, seed)
    return Dataset(root.name, str(root), "folder", tuple(train), tuple(test))


def flat_folder_message(root: Path) -> str:
    """Why a folder of images without label subfolders cannot be read as it is, and the two ways to read it."""
    return (
        f"{root} holds images but no <label>/ subfolders, so their labels are unknown. Either give "
        "--label-from-name REGEX to read each label from its file name (the first group, or the group "
        "named 'label': e.g. '^(.+?)_[0-9]+$' reads Blue_Jay from Blue_Jay_0001.jpg) with --split-ratio R, "
        "or list the images in a CSV of path,label[,split] and evaluate that file (docs/evaluation.md)"
    )


# -- labels in file names ----------------------------------------------------------------------
def load_named(root: Path, pattern: str, split_ratio: float | None = None, seed: int = 0) -> Dataset:
    """The images of `root` (and its subfolders), each labelled by `pattern` searched in its file name
    (without the suffix): its group 'label', else its first group, else the whole match."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"--label-from-name {pattern!r} is not a regular expression: {exc}") from None
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    items, unmatched = [], []
    for path in paths:
        label = name_label(regex, path.stem)
        if label:
            items.append(LabelledImage(path.relative_to(root).as_posix(), str(path.resolve()), label))
        else:
            unmatched.append(path.name)
    if unmatched:
        shown = ", ".join(unmatched[:3]) + (f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else "")
        raise DatasetError(f"--label-from-name {pattern!r} finds no label in {shown}")
    if split_ratio is None:
        raise DatasetError("labels from file names have no train/test split: give --split-ratio R (the train fraction)")
    train, test = split_by_ratio(items, split_ratio, seed)
    return Dataset(root.name, str(root), "named", tuple(train), tuple(test))


def name_label(regex: re.Pattern[str], stem: str) -> str | None:
    """The label `regex` finds in a file name's `stem`, stripped; None when it finds none."""
    found = regex.search(stem)
    if not found:
        return None
    if "label" in regex.groupindex:
        label = found.group("label")
    else:
        label = found.group(1) if regex.groups else found.group(0)
    return label.strip() if label and label.strip() else None


# -- CUB ---------------------------------------------------------------------------------------
def read_pairs(path: Path) -> dict[str, str]:
    """CUB's `id value` lines, separated by a comma or by whitespace; blank lines skipped."""
    pairs = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in (line.split(",", 1) if "," in line else line.split(None, 1))]
        if len(parts) != 2 or not all(parts):
            raise DatasetError(f"{path}:{number}: expected 'id, value', got {line!r}")
        pairs[parts[0]] = parts[1]
    return pairs


def load_cub(root: Path) -> Dataset:
    """The CUB-200-2011 layout: `images.txt`, `image_class_labels.txt`, `train_test_split.txt`,
    `classes.txt` and the images under `images/`."""
    missing = [name for name in CUB_FILES if not (root / name).is_file()]
    if missing:
        raise DatasetError(f"{root} is not in the CUB layout: missing {', '.join(missing)}")
    paths, class_of, is_train, classes = (read_pairs(root / name) for name in CUB_FILES)
    train, test = [], []
    for image_id, relative in paths.items():
        try:
            label = classes[class_of[image_id]]
            split = is_train[image_id]
        except KeyError as exc:
            raise DatasetError(f"{root}: image {image_id} has no class or split entry ({exc})") from exc
        if split not in ("0", "1"):
            raise DatasetError(f"{root}/train_test_split.txt: image {image_id} has split {split!r}; expected 1 or 0")
        item = LabelledImage(image_id, str((root / "images" / relative).resolve()), label)
        (train if split == "1" else test).append(item)
    return Dataset(root.name, str(root), "cub", tuple(train), tuple(test))


# -- CSV ---------------------------------------------------------------------------------------
def load_csv(path: Path, split_ratio: float | None = None, seed: int = 0) -> Dataset:
    """Rows of `path,label[,split]` (split: train or test), an optional header row; image paths
    relative to the CSV's folder. Without a split column, `split_ratio` splits per label."""
    rows = [row for row in csv.reader(path.read_text(encoding="utf-8").splitlines()) if any(c.strip() for c in row)]
    if rows and tuple(c.strip().lower() for c in rows[0][:2]) == CSV_HEADER:
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"{path} holds no rows of path,label[,split]")
    widths = {len(row) for row in rows}
    if len(widths) != 1 or widths.pop() not in (2, 3):
        raise DatasetError(f"{path}: every row must be path,label or path,label,split (all rows alike)")
    items, splits = [], []
    for number, row in enumerate(rows, 1):
        image, label = row[0].strip(), row[1].strip()
        items.append(LabelledImage(image, str((path.parent / image).resolve()), label))
        splits.append(row[2].strip().lower() if len(row) == 3 else None)
        if splits[-1] not in (None, "train", "test"):
            raise DatasetError(f"{path}: row {number} has split {row[2]!r}; use train or test")
    if splits[0] is None:
        if split_ratio is None:
            raise DatasetError(f"{path} has no split column: give --split-ratio R (the train fraction)")
        train, test = split_by_ratio(items, split_ratio, seed)
    else:
        if split_ratio is not None:
            raise DatasetError(f"{path} has a split column; drop --split-ratio")
        train = [item for item, split in zip(items, splits) if split == "train"]
        test = [item for item, split in zip(items, splits) if split == "test"]
    return Dataset(path.resolve().parent.name, str(path), "csv", tuple(train), tuple(test))


# -- any ---------------------------------------------------------------------------------------
def detect_format(path: Path) -> DatasetFormat:
    """csv for a file, cub for a folder with `images.txt`, else folder."""
    if path.is_file():
        return "csv"
    if (path / "images.txt").is_file():
        return "cub"
    return "folder"


def load_dataset(
    path: Path | str,
    format: DatasetFormat = "auto",
    split_ratio: float | None = None,
    seed: int = 0,
    label_pattern: str | None = None,
) -> Dataset:
    """Read a data set in any supported layout (labels from file names with `label_pattern`); refuses
    one with an empty split or no labels."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"data set {str(path)!r} does not exist")
    chosen = detect_format(path) if format == "auto" else format
    if label_pattern is not None:
        if not path.is_dir():
            raise DatasetError(f"--label-from-name reads the images of a folder; {str(path)!r} is not one")
        dataset = load_named(path, label_pattern, split_ratio, seed)
    elif chosen == "csv":
        dataset = load_csv(path, split_ratio, seed)
    elif chosen == "cub":
        dataset = load_cub(path)
    else:
        dataset = load_folder(path, split_ratio, seed)
    if not dataset.train or not dataset.test:
        raise DatasetError(
            f"data set {str(path)!r} has {len(dataset.train)} train and {len(dataset.test)} test images; "
            "both splits need images"
        )
    prompt_names(dataset.labels)  # every label must make a valid, distinct prompt name
    counts = Counter(item.id for item in dataset.train + dataset.test)
    repeated = sorted(i for i, n in counts.items() if n > 1)[:5]
    if repeated:
        raise DatasetError(f"data set {str(path)!r} lists some images twice: {repeated}")
    return dataset
