"""The examples run as documented (with the tiny models, offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path) -> str:
    """Run an example with this source and its own temporary folder, which it must leave empty."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary), "PYTHONPATH": str(EXAMPLES.parent)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name for p in temporary.iterdir() if p.name.startswith("rar-")] == []  # it removed what it made
    return done.stdout


def test_python_api_example_runs_the_whole_flow(tmp_path: Path) -> None:
    out = run_example("python_api.py", tmp_path)
    assert "retrieved:" in out and "ranked:" in out and "recognised:" in out


def test_stdio_client_example_retrieves_ranks_corrects_and_retrieves_again(tmp_path: Path) -> None:
    out = run_example("stdio_client_workflow.py", tmp_path)
    assert "1. retrieved:" in out and "2. ranked:" in out
    assert "4. retrieved again: 'blue jay' with similarity 1.000" in out


@pytest.mark.parametrize("name", ["claude_desktop_config.json", "vscode_mcp.json"])
def test_host_configurations_are_valid_json_that_start_the_server(name: str) -> None:
    config = json.loads((EXAMPLES / name).read_text())
    (server,) = (config.get("mcpServers") or config["servers"]).values()
    assert server["command"].endswith("rar-tools") and server["args"][0] == "serve"
