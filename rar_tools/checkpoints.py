"""How a checkpoint folder says it holds the project's tiny random test weights.

Every tiny checkpoint folder that `rar_tools.testing` writes holds `rar_tools_tiny.json`; reports check
for it instead of guessing from names, so numbers measured with meaningless weights are never
mistaken for results. Light to import: standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER_FILE = "rar_tools_tiny.json"
MARKER_KEY = "rar_tools_tiny"


def is_tiny_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a tiny test checkpoint written by this project."""
    path = Path(folder).expanduser() / MARKER_FILE
    try:
        return bool(json.loads(path.read_text()).get(MARKER_KEY))
    except (OSError, ValueError, AttributeError):
        return False
