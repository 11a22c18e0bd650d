"""rar-tools: retrieve and rank fine-grained visual labels (RAR) as MCP tools and a Python API."""

from rar_tools.api import RarTools
from rar_tools.errors import RarToolsError
from rar_tools.settings import Settings

__all__ = ["RarTools", "RarToolsError", "Settings"]
__version__ = "0.1.0"
