"""Label lists: the vocabularies shipped inside the package, and the `label|category|parent` file format.

The vocabularies are package data (`rar_tools/data/vocabularies/NAME.txt`), read with
`importlib.resources`, so an installed wheel finds them wherever it was installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from rar_tools.errors import RarToolsError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

LabelRow = tuple[str, str | None, str | None]


def vocabulary_folder() -> Traversable:
    """The package's folder of shipped vocabularies."""
    return resources.files("rar_tools") / "data" / "vocabularies"


def vocabularies(folder: Traversable | None = None) -> dict[str, Traversable]:
    """The shipped label lists, {name: file}, sorted by name."""
    folder = folder or vocabulary_folder()
    if not folder.is_dir():
        return {}
    files = [entry for entry in folder.iterdir() if entry.is_file() and entry.name.endswith(".txt")]
    return {entry.name.removesuffix(".txt"): entry for entry in sorted(files, key=lambda entry: entry.name)}


def vocabulary_file(name: str, folder: Traversable | None = None) -> Traversable:
    """The file of a shipped vocabulary; refuses unknown names, listing the known ones."""
    known = vocabularies(folder)
    if name not in known:
        listed = ", ".join(known) or f"none (no folder {folder or vocabulary_folder()})"
        raise RarToolsError(f"unknown vocabulary {name!r}; shipped vocabularies: {listed}")
    return known[name]


def read_label_file(path: Path | Traversable) -> list[LabelRow]:
    """Lines of `label`, `label|category` or `label|category|parent`; '#' starts a comment."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() or None for p in line.split("|")]
        if len(parts) > 3 or parts[0] is None:
            raise RarToolsError(f"{path}: bad line {line!r}; expected label|category|parent")
        parts += [None] * (3 - len(parts))
        rows.append((parts[0], parts[1], parts[2]))
    return rows
