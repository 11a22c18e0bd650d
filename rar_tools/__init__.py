"""rar-tools: retrieve and rank fine-grained visual labels (RAR) as MCP tools and a Python API.

Importing the package imports nothing heavy: `RarTools` (and torch, open_clip, chromadb behind it)
is imported on first use of the name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rar_tools.errors import RarToolsError

if TYPE_CHECKING:
    from rar_tools.api import RarTools
    from rar_tools.settings import Settings

__all__ = ["RarTools", "RarToolsError", "Settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "RarTools":
        from rar_tools.api import RarTools

        return RarTools
    if name == "Settings":
        from rar_tools.settings import Settings

        return Settings
    raise AttributeError(f"module 'rar_tools' has no attribute {name!r}")
