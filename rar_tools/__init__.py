"""rar-tools: retrieve and rank fine-grained visual labels (RAR) as MCP tools and a Python API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rar_tools.api import RarTools
    from rar_tools.errors import RarToolsError
    from rar_tools.settings import Settings

__all__ = ["RarTools", "RarToolsError", "Settings"]
__version__ = "0.1.0"

# The public names load on first use, so that importing a light module (`rar_tools.memory`,
# `rar_tools.limits`) does not import the API and with it torch.
_LAZY = {"RarTools": "rar_tools.api", "RarToolsError": "rar_tools.errors", "Settings": "rar_tools.settings"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rar_tools' has no attribute {name!r}")
