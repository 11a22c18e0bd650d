"""The marker file that tells the project's tiny random checkpoints from real weights.

Every tiny checkpoint folder holds `rar_tools_tiny.json`; reports check for it instead of guessing
from names, so numbers measured with meaningless weights are never mistaken for results.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER_FILE = "rar_tools_tiny.json"


def write_marker(folder: Path, role: str) -> Path:
    """Mark `folder` as a tiny random checkpoint of `role` (clip, mllm, llava)."""
    path = Path(folder) / MARKER_FILE
    path.write_text(
        json.dumps(
            {
                "rar_tools_tiny": True,
                "role": role,
                "note": "randomly initialised test weights written by rar_tools.testing; outputs are meaningless",
            },
            indent=2,
        )
    )
    return path


def is_tiny_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a tiny test checkpoint written by this project."""
    path = Path(folder).expanduser() / MARKER_FILE
    try:
        return bool(json.loads(path.read_text()).get("rar_tools_tiny"))
    except (OSError, ValueError, AttributeError):
        return False
