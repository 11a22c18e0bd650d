"""Writes the marker file that tells the project's tiny random checkpoints from real weights.

The marker's name and the check that reads it live in `rar_tools.checkpoints` (production code reads
them; it never imports this package); both are re-exported here for the test helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

from rar_tools.checkpoints import MARKER_FILE as MARKER_FILE
from rar_tools.checkpoints import MARKER_KEY
from rar_tools.checkpoints import is_tiny_checkpoint as is_tiny_checkpoint


def write_marker(folder: Path, role: str) -> Path:
    """Mark `folder` as a tiny random checkpoint of `role` (clip, mllm, llava)."""
    path = Path(folder) / MARKER_FILE
    path.write_text(
        json.dumps(
            {
                MARKER_KEY: True,
                "role": role,
                "note": "randomly initialised test weights written by rar_tools.testing; outputs are meaningless",
            },
            indent=2,
        )
    )
    return path
