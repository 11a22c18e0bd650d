"""What an installer may set when it launches `rar-tools serve`: the settings offered to the user
(shared by the bundle's user configuration and the registry entry) and how each reaches the server."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rar_tools import __version__
from rar_tools.settings import Settings

NAME = "rar-tools"
REGISTRY_NAME = "io.github.rar-tools/rar-tools"
SUMMARY = "Fine-grained visual recognition: a CLIP memory of examples, then a multimodal LLM ranks"
VERSION = __version__

# The Settings fields an installer asks about: {field: (the title its form shows, what empty means)}.
OFFERED_SETTINGS: dict[str, tuple[str, str]] = {
    "data_dir": ("Data folder", "empty: the per-user data folder, ~/.local/share/rar-tools/memories"),
    "clip_model": ("CLIP model", ""),
    "ranker_model": ("Ranker model (multimodal LLM)", ""),
    "device": ("Device", ""),
    "no_ranker": ("Without a ranker", ""),
}
FOLDERS_TITLE = "Picture folders"
FOLDERS_HELP = (
    "The folders whose pictures the assistant may have the server read (file paths outside them are "
    "refused); passed as `rar-tools serve FOLDER...`."
)


@dataclass(frozen=True)
class OfferedSetting:
    """One setting as an installer offers it: its variable, form type, title, help and default."""

    field: str
    title: str
    empty_means: str = ""

    @property
    def variable(self) -> str:
        return f"RAR_TOOLS_{self.field.upper()}"

    @property
    def kind(self) -> str:
        """`boolean`, `number`, `directory` or `string`, from the field's annotation."""
        annotation = Settings.model_fields[self.field].annotation
        kinds = {bool: "boolean", int: "number", float: "number", Path: "directory"}
        return kinds.get(annotation, "string")

    @property
    def description(self) -> str:
        text = Settings.model_fields[self.field].description or ""
        return f"{text} ({self.empty_means})" if self.empty_means else text

    @property
    def default(self) -> Any:
        """The Settings default; "" for a default computed at start-up (the data folder)."""
        field = Settings.model_fields[self.field]
        return "" if field.default_factory is not None else field.default

    @property
    def choices(self) -> list[str] | None:
        annotation = Settings.model_fields[self.field].annotation
        return list(typing.get_args(annotation)) if typing.get_origin(annotation) is typing.Literal else None


def offered_settings() -> list[OfferedSetting]:
    """The settings an installer offers, in form order."""
    return [OfferedSetting(field, title, empty) for field, (title, empty) in OFFERED_SETTINGS.items()]
