"""Loading a transformers checkpoint by hub id or local folder, with one actionable error for every way
it can fail. Light to import: the loaders passed in import their own libraries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rar_tools.errors import ModelLoadError


def load_pretrained(what: str, model: str, *loaders: Callable[[str], Any]) -> list[Any]:
    """Each of `loaders` applied to `model` (e.g. `AutoProcessor.from_pretrained`); a path that is not a
    folder, or any failure to load, becomes one `ModelLoadError` naming the `what` model and how to get it."""
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
        raise ModelLoadError(f"the {what} model folder {model!r} does not exist")
    try:
        return [load(model) for load in loaders]
    except Exception as exc:  # any load failure becomes one actionable message
        raise ModelLoadError(
            f"could not load the {what} model {model!r} ({type(exc).__name__}: {exc}). Give a local folder "
            f"holding the checkpoint, or download it once while online (`hf download {model}`)"
        ) from exc
